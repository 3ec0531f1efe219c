package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// HTTP/2. fasthttp speaks HTTP/1.1 only; connections that negotiate "h2"
// through ALPN are handed (fasthttp's NextProto) to golang.org/x/net/http2,
// and each stream is bridged into the very same Handler as HTTP/1.1: its
// request is copied into a fasthttp.RequestCtx, Handler routes, enforces,
// serves and measures it, and the response is copied back to the stream.
//
// Metering: HTTP/1.1 egress is what the connection writes (headers and
// body). An h2 stream is charged the same figure: the response's HTTP/1.1
// header block plus the body bytes the stream accepted. HPACK compression,
// h2 framing, and chunked-encoding framing (HTTP/1.1 only) are nobody's
// usage, so one response costs a tenant the same over h1 and h2.
type h2Server struct {
	srv  *http2.Server
	base *http.Server // carries timeouts and the graceful-shutdown hook
	p    *Proxy
}

func newH2(p *Proxy) *h2Server {
	h := &h2Server{
		srv: &http2.Server{
			IdleTimeout:               p.limits.IdleTimeout,
			MaxReadFrameSize:          h2MaxFrameSize,
			MaxDecoderHeaderTableSize: h2HeaderTableSize,
		},
		base: &http.Server{
			MaxHeaderBytes:    p.limits.MaxHeaderBytes,
			ReadHeaderTimeout: p.limits.ReadTimeout,
			WriteTimeout:      p.limits.WriteTimeout,
			IdleTimeout:       p.limits.IdleTimeout,
		},
		p: p,
	}
	// Registers the GOAWAY broadcast on base.Shutdown.
	_ = http2.ConfigureServer(h.base, h.srv)
	return h
}

// shutdown sends GOAWAY on every h2 connection: clients finish their
// streams and open no new ones, so the connections end and fasthttp's
// shutdown can complete.
func (h *h2Server) shutdown(ctx context.Context) {
	_ = h.base.Shutdown(ctx)
}

// serveH2 serves one connection that negotiated h2. It blocks until the
// connection ends. The server reads through h2StrictConn, which makes a
// request with a connection-specific header field a stream error.
func (p *Proxy) serveH2(c net.Conn) error {
	if mc := metered(c); mc != nil {
		mc.head.on = false // h2 frames, not HTTP/1.1 heads (framing.go)
	}
	p.h2.srv.ServeConn(newH2StrictConn(c, p.limits.MaxHeaderBytes), &http2.ServeConnOpts{
		BaseConfig: p.h2.base,
		Handler:    http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serveH2Stream(w, r, c) }),
	})
	return nil
}

// h2Stream is the net.Conn a bridged RequestCtx sees: the client
// connection's addresses and TLS state, and the counters the handler
// charges the stream to (see charge). Reads and writes are never made.
type h2Stream struct {
	start time.Time // when the stream's request arrived (requestTime)
	conn  net.Conn
	owner *meter.Counters
	gate  *billing.Gate // the org's enforcement, see enforceWrites
}

var errStreamIO = errors.New("proxy: an h2 stream is not read or written as a net.Conn")

func (s *h2Stream) Read([]byte) (int, error)         { return 0, errStreamIO }
func (s *h2Stream) Write([]byte) (int, error)        { return 0, errStreamIO }
func (s *h2Stream) Close() error                     { return nil }
func (s *h2Stream) LocalAddr() net.Addr              { return s.conn.LocalAddr() }
func (s *h2Stream) RemoteAddr() net.Addr             { return s.conn.RemoteAddr() }
func (s *h2Stream) SetDeadline(time.Time) error      { return nil }
func (s *h2Stream) SetReadDeadline(time.Time) error  { return nil }
func (s *h2Stream) SetWriteDeadline(time.Time) error { return nil }

// Handshake and ConnectionState make ctx.IsTLS() true (X-Forwarded-Proto).
func (s *h2Stream) Handshake() error { return nil }
func (s *h2Stream) ConnectionState() tls.ConnectionState {
	if tc, ok := s.conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// h2HopByHop are the connection-specific response headers HTTP/2 forbids
// (RFC 9113 section 8.2.2).
var h2HopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Transfer-Encoding": true, "Upgrade": true,
}

func (p *Proxy) serveH2Stream(w http.ResponseWriter, r *http.Request, c net.Conn) {
	p.metrics.h2Requests.Inc()
	st := &h2Stream{conn: c, start: time.Now()}
	var ctx fasthttp.RequestCtx
	ctx.Init2(st, fasthttpLogger{p.log}, false)

	req := &ctx.Request
	req.Header.SetMethod(r.Method)
	req.SetRequestURI(r.RequestURI)
	req.Header.SetHost(r.Host)
	for k, vs := range r.Header {
		if k == "Content-Length" || k == "Host" {
			continue
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		n := int(r.ContentLength) // -1: unknown, as a chunked HTTP/1.1 body
		req.SetBodyStream(r.Body, n)
	}

	p.Handler(&ctx)
	drainH2Body(w, r)

	resp := &ctx.Response
	if ctx.IsHead() {
		resp.SkipBody = true
	}
	if len(resp.Header.Server()) == 0 {
		resp.Header.SetServer(serverName)
	}
	status := resp.StatusCode()
	sendBody := !resp.SkipBody && status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
	if !resp.IsBodyStream() && (sendBody || len(resp.Body()) > 0) {
		resp.Header.SetContentLength(len(resp.Body())) // as Response.Write does for HTTP/1.1
	}
	h := w.Header()
	for k, v := range resp.Header.All() {
		if key := string(k); !h2HopByHop[key] {
			h.Add(key, string(v))
		}
	}
	headerBytes := len(resp.Header.Header()) // the HTTP/1.1 header block

	w.WriteHeader(status)
	bw := &h2BodyWriter{w: w, gate: st.gate, done: r.Context().Done()}
	if st.gate != nil && p.limits.WriteTimeout > 0 {
		bw.deadline = time.Now().Add(p.limits.WriteTimeout)
	}
	if resp.IsBodyStream() && resp.Header.ContentLength() < 0 {
		// A stream of unknown length (a proxied chunked or event-stream
		// response): pass each piece on as it comes.
		bw.flusher, _ = w.(http.Flusher)
	}
	var err error
	switch {
	case sendBody:
		err = resp.BodyWriteTo(bw)
	case resp.IsBodyStream():
		err = resp.CloseBodyStream()
	}
	if err != nil && p.log.Enabled(context.Background(), -4) {
		p.log.Debug("h2 response body not fully written", "err", err)
	}
	if st.owner != nil {
		st.owner.AddEgress(headerBytes + bw.n)
	}
}

// drainH2Body reads what is left of a request body the handler did not
// read (a 405 on a directory site, an error page), up to drainBytes within
// drainTime, as on HTTP/1.1 (finishBody), before the response is sent: the
// stream's framing is then checked to its end (a DATA length that
// contradicts content-length is a stream error, RFC 9113 §8.1.1) instead of
// racing the response. A longer body is left to x/net, which resets the
// stream once the response ends.
func drainH2Body(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength > drainBytes {
		return
	}
	if d, ok := w.(interface{ SetReadDeadline(time.Time) error }); ok {
		_ = d.SetReadDeadline(time.Now().Add(drainTime))
	}
	_, _ = io.CopyN(io.Discard, r.Body, drainBytes+1)
}

// h2BodyWriter counts the body bytes an h2 stream accepted and, for streams
// of unknown length, flushes after every write.
type h2BodyWriter struct {
	w       io.Writer
	flusher http.Flusher
	gate    *billing.Gate // nil: full speed, see paced
	n       int
	// A paced write stops waiting when the stream ends (done) or at the
	// stream's write deadline (zero: none).
	done     <-chan struct{}
	deadline time.Time
}

func (b *h2BodyWriter) Write(p []byte) (int, error) {
	if b.gate == nil || b.gate.Decision() == billing.Allow {
		return b.write(p)
	}
	return paced(b.gate, p, b.done, b.deadline, b.write)
}

func (b *h2BodyWriter) write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	b.n += n
	if err == nil && (b.flusher != nil || b.gate != nil && b.gate.Decision() != billing.Allow) {
		if f, ok := b.w.(http.Flusher); ok {
			f.Flush() // a paced body goes out as it is paced
		}
	}
	return n, err
}
