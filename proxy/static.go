package proxy

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
)

// contentSource is what static serving needs from a site's content: a file by
// URL path. *sites.DirSource implements it (and the Gitea source will).
type contentSource interface {
	// GetAt returns the file at urlPath; at is the request's start time.
	GetAt(urlPath []byte, at time.Time) (*sites.File, error)
}

// redirecter is a content source with _redirects rules (Gitea repos).
type redirecter interface {
	Redirects() *sites.Redirects
}

var (
	hdrETag          = []byte(fasthttp.HeaderETag)
	hdrLastModified  = []byte(fasthttp.HeaderLastModified)
	hdrVary          = []byte(fasthttp.HeaderVary)
	hdrAcceptRanges  = []byte(fasthttp.HeaderAcceptRanges)
	hdrContentEnc    = []byte(fasthttp.HeaderContentEncoding)
	hdrIfNoneMatch   = []byte(fasthttp.HeaderIfNoneMatch)
	hdrIfRange       = []byte(fasthttp.HeaderIfRange)
	hdrRange         = []byte(fasthttp.HeaderRange)
	hdrAllow         = []byte(fasthttp.HeaderAllow)
	hdrContentRange  = []byte(fasthttp.HeaderContentRange)
	valBytes         = []byte("bytes")
	valAcceptEnc     = []byte(fasthttp.HeaderAcceptEncoding)
	valGzip          = []byte("gzip")
	valBrotli        = []byte("br")
	valGetHead       = []byte("GET, HEAD")
	path404          = []byte("/404.html")
	bytesRangePrefix = []byte("bytes=")
)

// serveStatic answers a GET or HEAD from a site's content source; urlPath is
// the path inside the source (ctx.Path() but for a Gitea project site, where
// the repository's name comes first).
func (p *Proxy) serveStatic(ctx *fasthttp.RequestCtx, src contentSource, urlPath []byte) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.SetCanonical(hdrAllow, valGetHead)
		writeError(ctx, fasthttp.StatusMethodNotAllowed)
		return
	}
	f, err := src.GetAt(urlPath, ctx.Time())
	switch {
	case err == nil:
		p.writeFile(ctx, f, fasthttp.StatusOK)
	case errors.Is(err, sites.ErrIsDir):
		redirectSlash(ctx)
	case errors.Is(err, sites.ErrFileNotFound):
		if p.redirect(ctx, src, urlPath) {
			return
		}
		// The site's own 404 page when it has one, tollgate's otherwise.
		if nf, err := src.GetAt(path404, ctx.Time()); err == nil && nf.Body != nil {
			p.writeFile(ctx, nf, fasthttp.StatusNotFound)
			return
		}
		writeError(ctx, fasthttp.StatusNotFound)
	case errors.Is(err, sites.ErrBadPath):
		writeError(ctx, fasthttp.StatusBadRequest)
	case errors.Is(err, sites.ErrUpstream):
		p.log.Warn("gitea unavailable", slog.Any("err", err))
		writeError(ctx, fasthttp.StatusBadGateway)
	default:
		p.log.Error("reading site content", slog.String("path", string(urlPath)), slog.Any("err", err))
		writeError(ctx, fasthttp.StatusInternalServerError)
	}
}

// writeFile writes f with HTTP semantics: validators and 304, a single byte
// range (206/416), gzip or brotli when the client accepts them. For a cached
// file it copies nothing and allocates nothing.
func (p *Proxy) writeFile(ctx *fasthttp.RequestCtx, f *sites.File, status int) {
	req, h := &ctx.Request.Header, &ctx.Response.Header
	h.SetContentTypeBytes(f.ContentType)
	h.SetCanonical(hdrLastModified, f.LastModified)
	body, etag, enc := f.Body, f.ETag, []byte(nil)
	compressed := f.Gzip != nil || f.Brotli != nil
	if compressed {
		h.SetCanonical(hdrVary, valAcceptEnc)
	}
	rangeHdr := req.PeekBytes(hdrRange)
	if status != fasthttp.StatusOK {
		rangeHdr = nil
	}
	if ir := req.PeekBytes(hdrIfRange); len(rangeHdr) > 0 && len(ir) > 0 && !bytes.Equal(ir, f.ETag) && !bytes.Equal(ir, f.LastModified) {
		rangeHdr = nil // the client's copy is outdated: send it all
	}
	if len(rangeHdr) > 0 && bytes.IndexByte(rangeHdr, ',') >= 0 {
		rangeHdr = nil // multipart ranges are not offered; RFC 9110 lets us send 200
	}
	if compressed && len(rangeHdr) == 0 {
		switch {
		case f.Brotli != nil && req.HasAcceptEncodingBytes(valBrotli):
			body, etag, enc = f.Brotli, f.ETagBrotli, valBrotli
		case f.Gzip != nil && req.HasAcceptEncodingBytes(valGzip):
			body, etag, enc = f.Gzip, f.ETagGzip, valGzip
		}
	}
	h.SetCanonical(hdrETag, etag)
	if status == fasthttp.StatusOK {
		h.SetCanonical(hdrAcceptRanges, valBytes)
		if notModified(ctx, etag, f) {
			h.SetStatusCode(fasthttp.StatusNotModified)
			return
		}
	}
	if enc != nil {
		h.SetCanonical(hdrContentEnc, enc)
	}
	start, end := int64(0), f.Size-1
	if len(rangeHdr) > 0 {
		if !bytes.HasPrefix(rangeHdr, bytesRangePrefix) {
			rangeHdr = nil // an unknown range unit is ignored (RFC 9110 §14.2)
		} else {
			s, e, err := fasthttp.ParseByteRange(rangeHdr, int(f.Size))
			if err != nil {
				h.SetCanonical(hdrContentRange, fasthttp.AppendUint(append([]byte(nil), "bytes */"...), int(f.Size)))
				writeError(ctx, fasthttp.StatusRequestedRangeNotSatisfiable)
				return
			}
			start, end = int64(s), int64(e)
			status = fasthttp.StatusPartialContent
			h.SetContentRange(s, e, int(f.Size))
		}
	}
	h.SetStatusCode(status)
	if body != nil {
		if status == fasthttp.StatusPartialContent {
			body = body[start : end+1]
		}
		ctx.Response.SetBodyRaw(body)
		return
	}
	// A file too large for the cache: stream it from its source.
	rc, err := f.Open()
	if err != nil {
		p.log.Error("opening site file", slog.Any("err", err))
		writeError(ctx, fasthttp.StatusInternalServerError)
		return
	}
	if start > 0 {
		if _, err := rc.Seek(start, io.SeekStart); err != nil {
			rc.Close()
			writeError(ctx, fasthttp.StatusInternalServerError)
			return
		}
	}
	n := end - start + 1
	ctx.Response.SetBodyStream(&limitedReadCloser{Reader: io.LimitReader(rc, n), c: rc}, int(n))
}

// notModified evaluates If-None-Match, then If-Modified-Since (RFC 9110 §13.2.2).
func notModified(ctx *fasthttp.RequestCtx, etag []byte, f *sites.File) bool {
	if inm := ctx.Request.Header.PeekBytes(hdrIfNoneMatch); len(inm) > 0 {
		return etagListMatch(inm, etag)
	}
	return !ctx.IfModifiedSince(f.ModTime)
}

// etagListMatch reports whether an If-None-Match list names etag (weak
// comparison: W/ prefixes are ignored) or is "*".
func etagListMatch(list, etag []byte) bool {
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		item = bytes.TrimSpace(item)
		item = bytes.TrimPrefix(item, []byte("W/"))
		if (len(item) == 1 && item[0] == '*') || bytes.Equal(item, etag) {
			return true
		}
	}
	return false
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
		f, err := src.GetAt([]byte(to), ctx.Time())
		if err != nil {
			return false
		}
		p.writeFile(ctx, f, fasthttp.StatusOK)
		return true
	}
	ctx.Response.Header.Set(fasthttp.HeaderLocation, to)
	writeError(ctx, status)
	return true
}

// redirectSlash sends the browser to the request's path with a slash
// appended, keeping the query (like nginx for a directory), so relative
// links of the page resolve.
func redirectSlash(ctx *fasthttp.RequestCtx) {
	loc := append(append([]byte(nil), ctx.Path()...), '/')
	if q := ctx.URI().QueryString(); len(q) > 0 {
		loc = append(append(loc, '?'), q...)
	}
	ctx.Response.Header.SetCanonical([]byte(fasthttp.HeaderLocation), loc)
	writeError(ctx, fasthttp.StatusMovedPermanently)
}
