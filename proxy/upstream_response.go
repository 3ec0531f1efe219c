package proxy

// The response side of the reverse proxy: status, headers, trailers and the
// streamed body of an upstream's answer relayed to the visitor.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/valyala/fasthttp"
)

// bufferedBodyBytes is the largest upstream body read whole before the
// visitor's answer starts, as nginx's proxy_buffering does (its
// proxy_buffers hold 32-64 KiB by default): the pooled upstream connection
// is free again before a slow visitor has read a byte, an upstream that
// stops or stalls mid-body gets the visitor a 502 or 504 page instead of a
// cut answer, and the answer goes out in one write (fasthttp's write buffer
// is as large, writeBufferSize). Larger bodies, and those of unknown size
// (chunked, read until close: event streams among them), stream.
const bufferedBodyBytes = 32 << 10

// bodyScratch holds the buffers a body is read into before it is copied
// to the visitor's response.
var bodyScratch = sync.Pool{New: func() any { b := make([]byte, bufferedBodyBytes+1); return &b }}

// relayResponse copies resp's status and end-to-end headers to ctx and
// gives ctx its body: read whole when it is bufferedBodyBytes or less and
// conn is nil, else as a stream. resp (and conn, if not nil) are released
// when fasthttp has written the body, or here. An error is returned only
// when the buffered body could not be read; ctx's response is then
// untouched.
func relayResponse(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, conn net.Conn) error {
	stream, n := resp.BodyStream(), resp.Header.ContentLength()
	if stream != nil && conn == nil && n >= 0 && n <= bufferedBodyBytes {
		err := bufferBody(&ctx.Response, stream, n)
		if err == nil {
			copyResponseHeader(&ctx.Response.Header, &resp.Header)
		}
		_ = resp.CloseBodyStream() // pools the connection when the body was read to its end
		fasthttp.ReleaseResponse(resp)
		return err
	}
	copyResponseHeader(&ctx.Response.Header, &resp.Header)
	if stream == nil {
		// HEAD, 204, 304: no body, but a HEAD answer keeps its length.
		if n >= 0 {
			ctx.Response.Header.SetContentLength(n)
		}
		if b := resp.Body(); len(b) > 0 {
			ctx.Response.SetBody(b)
		}
		fasthttp.ReleaseResponse(resp)
		if conn != nil {
			_ = conn.Close()
		}
		return nil
	}
	b := upstreamBodyPool.Get().(*upstreamBody)
	b.resp, b.conn = resp, conn
	if n == -1 && announceTrailers(&ctx.Response.Header, &resp.Header) {
		b.trailer = &ctx.Response.Header
	}
	if n < 0 {
		n = -1 // chunked to the visitor, also for read-until-close bodies
	}
	ctx.Response.SetBodyStream(b, n)
	return nil
}

// bufferBody reads src, a body of n bytes, to its end and sets it as dst's
// body. The read past the n bytes ends the stream (io.EOF), so that closing
// it returns the upstream connection to the pool.
func bufferBody(dst *fasthttp.Response, src io.Reader, n int) error {
	bp := bodyScratch.Get().(*[]byte)
	defer bodyScratch.Put(bp)
	b := *bp
	if _, err := io.ReadFull(src, b[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if _, err := io.ReadFull(src, b[n:n+1]); err != io.EOF {
		if err == nil {
			err = errors.New("upstream body longer than its Content-Length")
		}
		return err
	}
	dst.SetBody(b[:n])
	return nil
}

// Trailers. An upstream's chunked body may end in trailer fields (RFC 9110
// §6.5). Those it announced in Trailer are passed on, as Caddy,
// httputil.ReverseProxy and nginx with proxy_pass_trailers (1.27.2+; off by
// default) do: to HTTP/1.1 clients in the chunked trailer section, which
// fasthttp writes from the response header's trailer list, whether or not
// the client sent "TE: trailers" (as net/http); to HTTP/2 clients as a
// HEADERS frame with END_STREAM after the DATA frames (h2_response.go).
// Fields the upstream did not announce, hop-by-hop ones, those named in its
// Connection header and the server's own (Server, Date) never are;
// fasthttp's client refuses framing, routing, authentication and cookie
// fields in both Trailer and the trailer section (the response gets 502, or
// its body is cut).

// announceTrailers declares on dst the trailer fields src announced that
// may be passed on and reports whether there are any. A field so declared
// is taken from the trailer section only: its header-section values are
// dropped (fasthttp writes the declared fields after the body, not before).
func announceTrailers(dst, src *fasthttp.ResponseHeader) bool {
	listed := listedNames(src.PeekAll(fasthttp.HeaderConnection))
	declared := false
	for name := range src.Trailers() {
		if isHopHeader(name) || listed.has(name) ||
			bytes.EqualFold(name, strServer) || bytes.EqualFold(name, strDate) {
			continue
		}
		dst.DelBytes(name)
		src.DelBytes(name)
		if dst.AddTrailerBytes(name) == nil {
			declared = true
		}
	}
	return declared
}

var (
	strServer = []byte(fasthttp.HeaderServer)
	strDate   = []byte(fasthttp.HeaderDate)
)

// takeTrailers sets on dst the values src received after the body for the
// trailer fields dst declared (several values of one field joined by
// commas) and leaves declared only those that came, so no empty field is
// sent for one that did not.
func takeTrailers(dst, src *fasthttp.ResponseHeader) {
	var names, value [256]byte
	came := names[:0]
	for name := range dst.Trailers() {
		values := src.PeekAll(string(name))
		if len(values) == 0 {
			continue
		}
		if len(came) > 0 {
			came = append(came, ", "...)
		}
		came = append(came, name...)
		dst.SetBytesKV(name, appendJoined(value[:0], values))
	}
	_ = dst.SetTrailerBytes(came)
}

// upstreamBody is an upstream's response body streaming to the visitor.
// fasthttp calls Close after writing it (or when the response is dropped),
// which returns the pooled connection (or closes it, if the body was not read
// to the end) and the pooled Response.
type upstreamBody struct {
	resp *fasthttp.Response
	conn net.Conn // an unpooled connection to close with the body, or nil
	// trailer is the visitor's response header, which declared the
	// upstream's trailer fields; nil: none. Their values are set there when
	// the body ends, before fasthttp (or the h2 stream) writes them.
	trailer *fasthttp.ResponseHeader
}

var upstreamBodyPool = sync.Pool{New: func() any { return new(upstreamBody) }}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.resp.BodyStream().Read(p)
	if err == io.EOF && b.trailer != nil {
		takeTrailers(b.trailer, &b.resp.Header)
		b.trailer = nil
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	if b.conn != nil {
		_ = b.conn.Close()
	}
	b.resp, b.conn, b.trailer = nil, nil, nil
	upstreamBodyPool.Put(b)
	return err
}
