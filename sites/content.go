package sites

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
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

	open func() (io.ReadSeekCloser, error)
}

// Open returns a reader over the whole file, for files whose Body is nil.
func (f *File) Open() (io.ReadSeekCloser, error) {
	if f.open == nil {
		return nil, fmt.Errorf("%w: no stream for this file", ErrFileNotFound)
	}
	return f.open()
}

// DirSource serves a site's files from a local directory through the shared
// cache. Nothing outside the directory is ever opened: it goes through an
// os.Root, which refuses ".." and symlinks that leave the root.
type DirSource struct {
	root  *os.Root
	cache *Cache
	space *space
}

// OpenDir opens dir as a content source cached in c.
func (c *Cache) OpenDir(dir string) (*DirSource, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("sites: open site directory: %w", err)
	}
	return &DirSource{root: root, cache: c, space: c.newSpace()}, nil
}

// Close drops the source's cached files and closes its directory.
func (d *DirSource) Close() error {
	d.cache.dropSpace(d.space)
	return d.root.Close()
}

// Get returns the file served at urlPath (already cleaned by the HTTP layer):
// "/dir/" gives dir/index.html, "/about" gives about or else about.html. A hit
// within the revalidation delay costs one map look-up and no I/O.
func (d *DirSource) Get(urlPath []byte) (*File, error) { return d.GetAt(urlPath, time.Now()) }

// GetAt is Get with the caller's idea of now (the request's start time), so
// the request path reads the clock once.
func (d *DirSource) GetAt(urlPath []byte, at time.Time) (*File, error) {
	now := at.UnixNano()
	if e := d.cache.lookup(d.space, urlPath); e != nil {
		if now-e.checked.Load() < int64(d.cache.cfg.DirRevalidate) {
			d.cache.hits.Add(1)
			return e.file, e.err
		}
		if e.file != nil && e.name != "" && d.unchanged(e) {
			e.checked.Store(now)
			d.cache.hits.Add(1)
			return e.file, nil
		}
	}
	d.cache.misses.Add(1)
	key := string(urlPath)
	name, f, err := d.load(key)
	if err != nil && !errors.Is(err, ErrFileNotFound) && !errors.Is(err, ErrIsDir) {
		return nil, err // an I/O error is not cached
	}
	d.cache.insert(d.space, key, name, f, err, now)
	return f, err
}

func (d *DirSource) unchanged(e *entry) bool {
	fi, err := d.root.Stat(e.name)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == e.file.Size && fi.ModTime().Equal(e.file.ModTime)
}

// load resolves urlPath to a file name under the root and reads it.
func (d *DirSource) load(urlPath string) (string, *File, error) {
	rel, err := servable(urlPath)
	if err != nil {
		return "", nil, err
	}
	var candidates []string
	switch {
	case rel == "" || strings.HasSuffix(rel, "/"):
		candidates = []string{rel + "index.html"}
	default:
		candidates = []string{rel, rel + ".html"}
	}
	for i, name := range candidates {
		fi, err := d.root.Stat(name)
		if err != nil {
			if absent(err) {
				continue
			}
			return "", nil, fmt.Errorf("sites: stat: %w", err)
		}
		if fi.IsDir() {
			if i == 0 && !strings.HasSuffix(rel, "/") {
				return "", nil, ErrIsDir
			}
			continue
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		f, err := d.read(name, fi)
		if err != nil {
			return "", nil, err
		}
		return name, f, nil
	}
	return "", nil, ErrFileNotFound
}

// servable checks a URL path every content source serves from and returns
// it relative to the site root: absolute, no NUL (ErrBadPath), and no
// hidden file or directory (.git, .env, ...; ErrFileNotFound), .well-known
// being the one exception (RFC 8615).
func servable(urlPath string) (string, error) {
	if len(urlPath) == 0 || urlPath[0] != '/' || strings.IndexByte(urlPath, 0) >= 0 {
		return "", ErrBadPath
	}
	rel := urlPath[1:]
	for _, seg := range strings.Split(rel, "/") {
		if seg == ".." || (strings.HasPrefix(seg, ".") && seg != ".well-known") {
			return "", ErrFileNotFound
		}
	}
	return rel, nil
}

// absent reports whether a stat error means "no such file" as far as a
// visitor is concerned: missing, not a directory, a name too long, a symlink
// loop, unreadable, or (os.Root's "path escapes from parent") leaving the root.
func absent(err error) bool {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission),
		errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ENAMETOOLONG),
		errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EINVAL):
		return true
	}
	return strings.Contains(err.Error(), "escapes")
}

func (d *DirSource) read(name string, fi fs.FileInfo) (*File, error) {
	tag := fmt.Sprintf("%x-%x", fi.ModTime().UnixNano(), fi.Size())
	root := d.root
	if fi.Size() > d.cache.cfg.MaxCachedFile {
		f := newFile(name, fi.Size(), fi.ModTime(), tag, nil)
		f.open = func() (io.ReadSeekCloser, error) { return root.Open(name) }
		return f, nil
	}
	fh, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("sites: open: %w", err)
	}
	defer fh.Close()
	body := make([]byte, fi.Size())
	if _, err := io.ReadFull(fh, body); err != nil {
		return nil, fmt.Errorf("sites: read: %w", err) // changed under us: not cached, retried next time
	}
	return newFile(name, fi.Size(), fi.ModTime(), tag, body), nil
}

// newFile builds a File named name (its extension gives the content type):
// validators from tag (an opaque version string, unquoted), and, when body
// is given (a cached file), the compressed variants of compressible types.
// Without body the caller sets open.
func newFile(name string, size int64, modTime time.Time, tag string, body []byte) *File {
	f := &File{Size: size, ModTime: modTime.UTC().Truncate(time.Second), Body: body}
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

// worthCompressing reports whether a compressed variant is kept: it must save
// more than a tenth of the body, else it is not worth its cache memory.
func worthCompressing(compressed, body int) bool { return compressed < body-body/10 }

// gzipWriters hold compress/gzip writers at level 6 (gzip -6); each carries
// about 800 KiB of match state, so they are reused.
var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression)
	return w
}}

// appendGzip appends body compressed as "gzip -6" does. The standard
// library's level 6 is used rather than klauspost/compress's (fasthttp's),
// whose level 6 stores text without repeated strings, such as base64,
// uncompressed where Huffman coding alone saves a quarter.
func appendGzip(dst, body []byte) []byte {
	buf := bytes.NewBuffer(dst)
	w := gzipWriters.Get().(*gzip.Writer)
	w.Reset(buf)
	w.Write(body) // a bytes.Buffer does not fail
	w.Close()
	w.Reset(io.Discard) // do not keep buf alive in the pool
	gzipWriters.Put(w)
	return buf.Bytes()
}

// compressible reports whether a content type is worth compressing.
func compressible(ctype string) bool {
	ct, _, _ := strings.Cut(ctype, ";")
	ct = strings.TrimSpace(ct)
	switch {
	case strings.HasPrefix(ct, "text/"):
		return true
	case strings.HasSuffix(ct, "+json"), strings.HasSuffix(ct, "+xml"):
		return true
	}
	switch ct {
	case "application/javascript", "application/json", "application/xml", "application/wasm",
		"application/manifest+json", "image/svg+xml", "application/x-javascript", "font/ttf", "font/otf":
		return true
	}
	return false
}

// maxUsageFiles bounds the walk of DirUsage.
const maxUsageFiles = 1 << 20

// DirUsage returns the bytes of the regular files under dir (symlinks are
// not followed, hidden files count: they occupy the disk all the same). It
// stops with an error past a million entries.
func DirUsage(dir string) (int64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	var total int64
	n := 0
	err = fs.WalkDir(root.FS(), ".", func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // an unreadable entry counts as nothing
		}
		if n++; n > maxUsageFiles {
			return fmt.Errorf("sites: more than %d entries under %s", maxUsageFiles, dir)
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total, err
}
