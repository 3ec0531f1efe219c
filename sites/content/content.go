// Package content turns a URL path of a site into a file ready to serve.
//
// Every source (a local directory here, a Gitea commit in sites/gitea)
// answers by one path rule (Resolve) over its Tree, through one cache shared
// by all sites (Cache) that holds small files with their gzip and brotli
// variants. A site's _redirects rules (Redirects) are read here too: they
// decide what a path without a file serves.
package content

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"time"

	"github.com/valyala/fasthttp"
)

// Content errors. The proxy maps them to HTTP answers.
var (
	// ErrFileNotFound: no file at that path (also for paths that would leave the
	// site root, hidden files and unreadable entries: the visitor learns nothing).
	ErrFileNotFound = errors.New("file not found")
	// ErrIsDir: the path names a directory without a trailing slash; the proxy
	// redirects to the path with one.
	ErrIsDir = errors.New("is a directory")
	// ErrBadPath: the path contains a NUL byte or is not absolute.
	ErrBadPath = errors.New("malformed path")
)

// File is one file of a site, ready to serve. It is immutable: every field may
// be shared by concurrent requests.
type File struct {
	Size    int64
	ModTime time.Time
	// ContentType comes from the file extension, else from sniffing the body.
	ContentType []byte
	// LastModified is ModTime as an HTTP date.
	LastModified []byte
	// ETag, ETagGzip and ETagBrotli are the quoted strong validators of the
	// identity, gzip and brotli representations.
	ETag, ETagGzip, ETagBrotli []byte
	// Body is the whole file, or nil when the file is larger than the cache's
	// per-file limit: then Open streams it.
	Body []byte
	// Gzip and Brotli are precompressed variants, nil when the type does not
	// compress or compression would not save anything.
	Gzip, Brotli []byte

	name string // under the source's root
	// mtime is the modification time as the source gave it, to the
	// nanosecond (ModTime is rounded down to the second, as Last-Modified
	// is): a directory source compares a new stat with it to revalidate.
	mtime time.Time
	open  func() (io.ReadSeekCloser, error)
}

// Open returns a reader over the whole file, for files whose Body is nil.
func (f *File) Open() (io.ReadSeekCloser, error) {
	if f.open == nil {
		return nil, fmt.Errorf("%w: no stream for this file", ErrFileNotFound)
	}
	return f.open()
}

// Meta is what a source knows of a file besides its bytes.
type Meta struct {
	// Name is the file's name under the site root; its extension gives
	// the content type.
	Name string
	// Size is the file's length; NewFile takes it from the body.
	Size    int64
	ModTime time.Time
	// Tag is an opaque version string, unquoted: the ETags are made of it.
	Tag string
}

// NewFile returns a file held in memory, with the compressed variants of
// a compressible type. body must not change afterwards.
func NewFile(m Meta, body []byte) *File {
	return newFile(m.Name, int64(len(body)), m.ModTime, m.Tag, body)
}

// NewStream returns a file too large to hold in memory: each request reads
// it through open (no compressed variants).
func NewStream(m Meta, open func() (io.ReadSeekCloser, error)) *File {
	f := newFile(m.Name, m.Size, m.ModTime, m.Tag, nil)
	f.open = open
	return f
}

// newFile builds a File named name (its extension gives the content type):
// validators from tag (an opaque version string, unquoted), and, when body
// is given (a cached file), the compressed variants of compressible types.
// Without body the caller sets open.
func newFile(name string, size int64, modTime time.Time, tag string, body []byte) *File {
	f := &File{Size: size, ModTime: modTime.UTC().Truncate(time.Second), Body: body, name: name, mtime: modTime}
	f.LastModified = fasthttp.AppendHTTPDate(nil, f.ModTime)
	f.ETag, f.ETagGzip, f.ETagBrotli = []byte(`"`+tag+`"`), []byte(`"`+tag+`-gz"`), []byte(`"`+tag+`-br"`)
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
		if body != nil {
			ctype = http.DetectContentType(body)
		}
	}
	f.ContentType = []byte(ctype)
	if body != nil && compressible(ctype) && len(body) >= 256 {
		if gz := appendGzip(nil, body); worthCompressing(len(gz), len(body)) {
			f.Gzip = gz
		}
		if br := fasthttp.AppendBrotliBytesLevel(nil, body, fasthttp.CompressBrotliDefaultCompression); worthCompressing(len(br), len(body)) {
			f.Brotli = br
		}
	}
	return f
}
