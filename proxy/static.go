package proxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/valyala/fasthttp"
)

// contentSource is what static serving needs from a site's content: a file by
// URL path. *content.DirSource (dir sites) and *gitea.Repo (gitea sites and
// pages repositories) implement it.
type contentSource interface {
	// GetAt returns the file at urlPath; at is the request's start time.
	GetAt(urlPath []byte, at time.Time) (*content.File, error)
}

// redirecter is a content source with _redirects rules (Gitea repos).
type redirecter interface {
	Redirects() *content.Redirects
}

var (
	hdrETag         = []byte(fasthttp.HeaderETag)
	hdrLastModified = []byte(fasthttp.HeaderLastModified)
	hdrVary         = []byte(fasthttp.HeaderVary)
	hdrAcceptRanges = []byte(fasthttp.HeaderAcceptRanges)
	hdrContentEnc   = []byte(fasthttp.HeaderContentEncoding)
	hdrIfNoneMatch  = []byte(fasthttp.HeaderIfNoneMatch)
	hdrIfMatch      = []byte(fasthttp.HeaderIfMatch)
	hdrIfUnmodSince = []byte(fasthttp.HeaderIfUnmodifiedSince)
	hdrLocation     = []byte(fasthttp.HeaderLocation)
	hdrIfRange      = []byte(fasthttp.HeaderIfRange)
	hdrRange        = []byte(fasthttp.HeaderRange)
	hdrAllow        = []byte(fasthttp.HeaderAllow)
	hdrContentRange = []byte(fasthttp.HeaderContentRange)
	valBytes        = []byte("bytes")
	valAcceptEnc    = []byte(fasthttp.HeaderAcceptEncoding)
	valGzip         = []byte("gzip")
	valBrotli       = []byte("br")
	valGetHead      = []byte("GET, HEAD")
	path404         = []byte("/404.html")
	weakPrefix      = []byte("W/")
)

// serveStatic answers a GET or HEAD from a site's content source; urlPath is
// the path inside the source (ctx.Path() but for a Gitea project site, where
// the repository's name comes first).
func (p *Proxy) serveStatic(ctx *fasthttp.RequestCtx, src contentSource, urlPath []byte) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.SetCanonical(hdrAllow, valGetHead)
		p.errPages.writeError(ctx, fasthttp.StatusMethodNotAllowed)
		return
	}
	f, err := src.GetAt(urlPath, requestTime(ctx))
	switch {
	case err == nil:
		p.writeFile(ctx, f, fasthttp.StatusOK)
	case errors.Is(err, content.ErrIsDir):
		redirectSlash(ctx)
	case errors.Is(err, content.ErrFileNotFound):
		if p.redirect(ctx, src, urlPath) {
			return
		}
		// The site's own 404 page when it has one, tollgate's otherwise.
		if nf, err := src.GetAt(path404, requestTime(ctx)); err == nil && nf.Body != nil {
			p.writeFile(ctx, nf, fasthttp.StatusNotFound)
			return
		}
		p.errPages.writeError(ctx, fasthttp.StatusNotFound)
	case errors.Is(err, content.ErrBadPath):
		p.errPages.writeError(ctx, fasthttp.StatusBadRequest)
	case errors.Is(err, gitea.ErrUpstream):
		p.giteaUnavailable(ctx, err)
	default:
		p.log.Error("reading site content", slog.String("path", string(urlPath)), slog.Any("err", err))
		p.errPages.writeError(ctx, fasthttp.StatusInternalServerError)
	}
}

// writeFile writes f with HTTP semantics: preconditions (412, 304) in the
// order of RFC 9110 §13.2.2, a single byte range for GET (206/416), gzip or
// brotli when the client accepts them. status is 200, or the status of a
// site's own error page (then preconditions and ranges do not apply,
// §13.2.1). For a cached file it copies nothing and allocates nothing.
func (p *Proxy) writeFile(ctx *fasthttp.RequestCtx, f *content.File, status int) {
	req, h := &ctx.Request.Header, &ctx.Response.Header
	// A range is for GET only (§14.2) and selects bytes of the identity
	// representation; If-Range decides whether it applies at all (§13.1.5).
	var rangeSet []byte
	ranged := false
	fields := requestFields(req)
	if status == fasthttp.StatusOK && ctx.IsGet() && fields&fieldRange != 0 {
		rangeSet, ranged = byteRangeSet(req.PeekBytes(hdrRange))
		if ranged && !ifRangeHolds(peekField(req, fields, fieldIfRange, hdrIfRange), f) {
			ranged = false // the client's copy is outdated: send it all
		}
	}
	body, etag, enc := f.Body, f.ETag, []byte(nil)
	compressed := f.Gzip != nil || f.Brotli != nil
	if compressed {
		h.SetCanonical(hdrVary, valAcceptEnc)
		if !ranged {
			switch {
			case f.Brotli != nil && req.HasAcceptEncodingBytes(valBrotli):
				body, etag, enc = f.Brotli, f.ETagBrotli, valBrotli
			case f.Gzip != nil && req.HasAcceptEncodingBytes(valGzip):
				body, etag, enc = f.Gzip, f.ETagGzip, valGzip
			}
		}
	}
	h.SetCanonical(hdrETag, etag)
	h.SetCanonical(hdrLastModified, f.LastModified)
	if status == fasthttp.StatusOK {
		switch precondition(ctx, etag, f, fields) {
		case fasthttp.StatusPreconditionFailed:
			p.errPages.writeError(ctx, fasthttp.StatusPreconditionFailed)
			return
		case fasthttp.StatusNotModified:
			// Validators and Vary only (§15.4.5): no Content-Type (not even
			// fasthttp's default one, which the h2 path would send), no
			// Accept-Ranges, no Content-Encoding.
			h.SetNoDefaultContentType(true)
			h.SetStatusCode(fasthttp.StatusNotModified)
			return
		}
		h.SetCanonical(hdrAcceptRanges, valBytes)
	}
	h.SetContentTypeBytes(f.ContentType)
	if enc != nil {
		h.SetCanonical(hdrContentEnc, enc)
	}
	start, end := int64(0), f.Size-1
	if ranged {
		s, e, ok := byteRange(rangeSet, f.Size)
		if !ok {
			h.SetCanonical(hdrContentRange, fasthttp.AppendUint(append([]byte(nil), "bytes */"...), int(f.Size)))
			p.errPages.writeError(ctx, fasthttp.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, end = s, e
		status = fasthttp.StatusPartialContent
		h.SetContentRange(int(s), int(e), int(f.Size))
	}
	h.SetStatusCode(status)
	if body != nil {
		if status == fasthttp.StatusPartialContent {
			body = body[start : end+1]
		}
		ctx.Response.SetBodyRaw(body)
		return
	}
	p.streamFile(ctx, f, start, end-start+1)
}

// streamFile sends n bytes from start of a file too large for the cache,
// read from its source.
func (p *Proxy) streamFile(ctx *fasthttp.RequestCtx, f *content.File, start, n int64) {
	rc, err := f.Open()
	if err != nil {
		p.log.Error("opening site file", slog.Any("err", err))
		p.errPages.writeError(ctx, fasthttp.StatusInternalServerError)
		return
	}
	if start > 0 {
		if _, err := rc.Seek(start, io.SeekStart); err != nil {
			rc.Close()
			p.errPages.writeError(ctx, fasthttp.StatusInternalServerError)
			return
		}
	}
	ctx.Response.SetBodyStream(&limitedReadCloser{Reader: io.LimitReader(rc, n), c: rc}, int(n))
}

// precondition evaluates the conditional headers of a GET or HEAD against
// the representation about to be sent, whose validator is etag, in the order
// of RFC 9110 §13.2.2: If-Match, else If-Unmodified-Since (412 when false),
// then If-None-Match, else If-Modified-Since (304 when false). It returns 0
// when the representation is to be sent.
func precondition(ctx *fasthttp.RequestCtx, etag []byte, f *content.File, fields uint8) int {
	req := &ctx.Request.Header
	if fields&fieldsPrecondition == 0 {
		return 0
	}
	if im := peekField(req, fields, fieldIfMatch, hdrIfMatch); len(im) > 0 {
		if !etagListMatch(im, etag, true) {
			return fasthttp.StatusPreconditionFailed
		}
	} else if ius := peekField(req, fields, fieldIfUnmodSince, hdrIfUnmodSince); len(ius) > 0 {
		// An invalid date (or a list of dates) is ignored (§13.1.4).
		if t, err := fasthttp.ParseHTTPDate(ius); err == nil && f.ModTime.After(t) {
			return fasthttp.StatusPreconditionFailed
		}
	}
	if inm := peekField(req, fields, fieldIfNoneMatch, hdrIfNoneMatch); len(inm) > 0 {
		if etagListMatch(inm, etag, false) {
			return fasthttp.StatusNotModified
		}
		return 0
	}
	if fields&fieldIfModSince != 0 && !ctx.IfModifiedSince(f.ModTime) {
		return fasthttp.StatusNotModified
	}
	return 0
}

// The request fields writeFile reads, as bits.
const (
	fieldRange uint8 = 1 << iota
	fieldIfRange
	fieldIfMatch
	fieldIfNoneMatch
	fieldIfModSince
	fieldIfUnmodSince

	fieldsAll          = 1<<iota - 1
	fieldsPrecondition = fieldIfMatch | fieldIfNoneMatch | fieldIfModSince | fieldIfUnmodSince
)

// fieldPrefixes name the fields of the bits above, colon included (a
// request that checkFraming let through has no space before a colon);
// Range first, the fields starting with "If-" after it.
var fieldPrefixes = [...]struct {
	bit    uint8
	prefix []byte
}{
	{fieldRange, []byte("Range:")},
	{fieldIfRange, []byte("If-Range:")},
	{fieldIfMatch, []byte("If-Match:")},
	{fieldIfNoneMatch, []byte("If-None-Match:")},
	{fieldIfModSince, []byte("If-Modified-Since:")},
	{fieldIfUnmodSince, []byte("If-Unmodified-Since:")},
}

// requestFields reports which of the fields writeFile reads the request
// may carry, from one pass over its header block as received: a lookup
// (PeekBytes copies and normalizes the name, then scans every field) is
// paid only for the fields present, none for a plain GET. Without a
// received block (an h2 stream, a request built in memory) every field is
// looked up.
func requestFields(h *fasthttp.RequestHeader) uint8 {
	raw := h.RawHeaders()
	if len(raw) == 0 {
		return fieldsAll
	}
	var fields uint8
	for len(raw) > 0 {
		switch raw[0] | 0x20 {
		case 'r':
			if hasPrefixFold(raw, fieldPrefixes[0].prefix) {
				fields |= fieldPrefixes[0].bit
			}
		case 'i':
			for _, f := range fieldPrefixes[1:] {
				if hasPrefixFold(raw, f.prefix) {
					fields |= f.bit
					break
				}
			}
		}
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			break
		}
		raw = raw[i+1:]
	}
	return fields
}

// peekField is the value of the field bit of fields names, nil when the
// request has none.
func peekField(h *fasthttp.RequestHeader, fields, bit uint8, name []byte) []byte {
	if fields&bit == 0 {
		return nil
	}
	return h.PeekBytes(name)
}

// etagListMatch reports whether an If-Match or If-None-Match list names etag
// or is "*". strong is If-Match's comparison, where a weak tag (W/...) never
// matches; otherwise W/ prefixes are ignored (RFC 9110 §8.8.3.2).
func etagListMatch(list, etag []byte, strong bool) bool {
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		item = bytes.TrimSpace(item)
		if len(item) == 1 && item[0] == '*' {
			return true
		}
		if bytes.HasPrefix(item, weakPrefix) {
			if strong {
				continue
			}
			item = item[len(weakPrefix):]
		}
		if bytes.Equal(item, etag) {
			return true
		}
	}
	return false
}

// ifRangeHolds evaluates If-Range (RFC 9110 §13.1.5): absent, or an entity
// tag or HTTP-date equal to the identity representation's (a strong
// comparison: a weak tag never holds).
func ifRangeHolds(ir []byte, f *content.File) bool {
	return len(ir) == 0 || bytes.Equal(ir, f.ETag) || bytes.Equal(ir, f.LastModified)
}

// byteRangeSet returns the range set of a Range header in the bytes unit
// (compared case-insensitively, RFC 9110 §14.1); ok is false when there is
// none to apply: no header, another unit (§14.2: ignored), or several ranges
// (not offered: RFC 9110 lets a server answer 200 instead).
func byteRangeSet(hdr []byte) (set []byte, ok bool) {
	i := bytes.IndexByte(hdr, '=')
	if i < 0 || !bytes.EqualFold(hdr[:i], valBytes) || bytes.IndexByte(hdr[i+1:], ',') >= 0 {
		return nil, false
	}
	return hdr[i+1:], true
}

// byteRange resolves one range-spec of RFC 9110 §14.1.1 ("first-last",
// "first-" or "-suffix") against a representation of size bytes: the first
// and last byte positions, or ok false when it is unsatisfiable or invalid
// (answered 416). A last position past the end, however large, means the end.
func byteRange(spec []byte, size int64) (first, last int64, ok bool) {
	spec = bytes.Trim(spec, " \t")
	dash := bytes.IndexByte(spec, '-')
	if dash < 0 {
		return 0, 0, false
	}
	a, b := spec[:dash], spec[dash+1:]
	if len(a) == 0 { // the last b bytes
		n, ok := rangeInt(b)
		if !ok || n == 0 || size == 0 {
			return 0, 0, false
		}
		return size - min(n, size), size - 1, true
	}
	first, ok = rangeInt(a)
	if !ok || first >= size {
		return 0, 0, false
	}
	last = size - 1
	if len(b) > 0 {
		n, ok := rangeInt(b)
		if !ok || n < first {
			return 0, 0, false
		}
		last = min(n, last)
	}
	return first, last, true
}

// rangeInt parses the digits of a byte position, saturating at MaxInt64.
func rangeInt(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + d
	}
	return n, true
}

type limitedReadCloser struct {
	io.Reader
	c io.Closer
}

func (l *limitedReadCloser) Close() error { return l.c.Close() }

// redirect applies the source's _redirects rules to a path with no file:
// a redirect answers with its Location, a 200 rewrite serves the target
// path (once: a rewrite is not rewritten again). It reports whether it
// answered.
func (p *Proxy) redirect(ctx *fasthttp.RequestCtx, src contentSource, urlPath []byte) bool {
	rd, ok := src.(redirecter)
	if !ok {
		return false
	}
	to, status, ok := rd.Redirects().Match(urlPath)
	if !ok {
		return false
	}
	if status == fasthttp.StatusOK {
		f, err := src.GetAt([]byte(to), requestTime(ctx))
		if err != nil {
			return false
		}
		p.writeFile(ctx, f, fasthttp.StatusOK)
		return true
	}
	writeRedirect(ctx, status, appendURIEscaped(nil, to))
	return true
}

// redirectSlash sends the browser to the request's path with a slash
// appended, keeping the query (like nginx for a directory), so relative
// links of the page resolve.
func redirectSlash(ctx *fasthttp.RequestCtx) {
	// ctx.Path() is decoded: escape it again ("/my docs" → "/my%20docs/").
	loc := (&url.URL{Path: string(ctx.Path()) + "/"}).EscapedPath()
	loc = "/" + strings.TrimLeft(loc, "/") // never "//host/": another site
	if q := ctx.URI().QueryString(); len(q) > 0 {
		loc += "?" + string(q)
	}
	writeRedirect(ctx, fasthttp.StatusMovedPermanently, []byte(loc))
}

// writeRedirect answers status (a 3xx) with Location loc and no body. Unlike
// an error page it is not marked no-store: a 301 or 308 is cacheable.
func writeRedirect(ctx *fasthttp.RequestCtx, status int, loc []byte) {
	resp := &ctx.Response
	resp.ResetBody()
	resp.Header.SetNoDefaultContentType(true)
	resp.Header.SetStatusCode(status)
	resp.Header.SetCanonical(hdrLocation, loc)
}

// appendURIEscaped appends s with every byte that may not appear in a URI
// reference (controls, space, non-ASCII, and "<>\^`{|}) percent-encoded:
// a _redirects target is written by a tenant, its :splat comes decoded from
// the request path. Reserved characters and existing escapes are kept.
func appendURIEscaped(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"<>\^`+"`{|}", c) >= 0 {
			dst = append(dst, '%', hex[c>>4], hex[c&0xf])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}
