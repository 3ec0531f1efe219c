package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
	"github.com/valyala/fasthttp"
)

// Upstream failures. serve has already answered the visitor with the matching
// page when it returns one of these (wrapped); the caller only counts them.
var (
	// errUpstreamUnavailable: the upstream refused or dropped the connection
	// or answered something that is not HTTP (502).
	errUpstreamUnavailable = errors.New("upstream unavailable")
	// errUpstreamTimeout: connecting to or hearing from the upstream took
	// longer than the configured timeout (504).
	errUpstreamTimeout = errors.New("upstream timed out")
)

const (
	// upstreamHeaderBytes bounds an upstream's response headers (the read
	// buffer of a pooled connection). nginx's proxy_buffer_size is 4-8 KiB;
	// apps with large Set-Cookie or CSP headers need more.
	upstreamHeaderBytes = 16 << 10
	// upstreamAttempts is how often a request without a body that may be
	// repeated (GET, HEAD, ...) is sent when a pooled keep-alive connection
	// turns out to have been closed by the upstream. Nothing else is retried.
	upstreamAttempts = 3
)

// upstream proxies requests to one tenant instance.
//
// It behaves like httputil.ReverseProxy and nginx's proxy_pass: hop-by-hop
// headers are dropped in both directions, X-Forwarded-* and Forwarded are
// set, bodies stream in both directions and are never held whole, and
// Upgrade requests (WebSocket) become a two-way tunnel (websocket.go).
type upstream struct {
	hc *fasthttp.HostClient

	scheme  string      // "http" or "https"
	addr    string      // host:port dialed; never shown to visitors
	base    string      // path prefix without the trailing slash, or ""
	tls     *tls.Config // nil for http
	trusted []netip.Prefix

	dialFunc    func(addr string, timeout time.Duration) (net.Conn, error)
	dialTimeout time.Duration
	// ioTimeout bounds every read and write on an upstream connection: the
	// upstream must make progress at least this often (idleConn).
	ioTimeout time.Duration
	// maxBody caps a request body (set it to Limits.MaxBodyBytes; 0: no
	// cap): fasthttp does not enforce Server.MaxRequestBodySize on streamed
	// bodies, neither a larger Content-Length nor a longer chunked body.
	// Past it the visitor gets 413 and the upstream a cut-off body.
	maxBody int
	// pages answer its errors (502, 504, 413, …); nil: the built-in ones.
	pages *ErrorPages

	mu      sync.Mutex
	closed  bool
	tunnels map[net.Conn]struct{} // upstream side of open Upgrade tunnels
}

// newUpstream prepares a proxy to target ("http://host:port" or
// "https://host[:port]", optional base path prefix). cfg has been through
// Defaults(); trusted are the parsed trusted proxies.
func newUpstream(target string, cfg Config, trusted []netip.Prefix) (*upstream, error) {
	t, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", target, err)
	}
	port := ""
	switch t.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return nil, fmt.Errorf("upstream %q: scheme must be http or https", target)
	}
	switch {
	case t.Hostname() == "":
		return nil, fmt.Errorf("upstream %q: no host", target)
	case t.User != nil, t.RawQuery != "", t.ForceQuery, t.Fragment != "":
		return nil, fmt.Errorf("upstream %q: only scheme, host, port and path are allowed", target)
	}
	if p := t.Port(); p != "" {
		port = p
	}

	u := &upstream{
		scheme:      t.Scheme,
		addr:        net.JoinHostPort(t.Hostname(), port),
		base:        trimSlash(t.EscapedPath()),
		trusted:     trusted,
		dialFunc:    fasthttp.DialTimeout,
		dialTimeout: cfg.UpstreamDialTimeout,
		ioTimeout:   cfg.UpstreamTimeout,
	}
	if a, err := netip.ParseAddr(t.Hostname()); err == nil && a.Is6() && !a.Is4In6() {
		// fasthttp's default dialer only resolves and dials IPv4.
		u.dialFunc = fasthttp.DialDualStackTimeout
	}
	if t.Scheme == "https" {
		u.tls = &tls.Config{
			ServerName: t.Hostname(),
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"},
		}
	}
	u.hc = &fasthttp.HostClient{
		Addr: u.addr,
		// TLS is done in dial (bounded by the dial timeout); fasthttp still
		// needs IsTLS to accept https request URIs.
		Dial: func(string) (net.Conn, error) {
			c, _, err := u.dial(u.ioTimeout)
			return c, err
		},
		IsTLS:               u.tls != nil,
		MaxConns:            cfg.UpstreamMaxConns,
		MaxIdleConnDuration: cfg.UpstreamIdleTimeout,
		// Wait for a pooled connection about as long as for a new one.
		MaxConnWaitTimeout: cfg.UpstreamDialTimeout,
		// Reuse the most recently used connection, the one most likely alive;
		// the others then idle out.
		ConnPoolStrategy:          fasthttp.LIFO,
		MaxIdemponentCallAttempts: upstreamAttempts,
		RetryIfErr:                retryStaleConn,
		ReadBufferSize:            upstreamHeaderBytes,
		// No ReadTimeout/WriteTimeout: with a streamed body fasthttp keeps
		// ReadTimeout as a deadline for the whole response, which would cut
		// off every download or event stream longer than UpstreamTimeout.
		// idleConn bounds each read and write instead, like nginx's
		// proxy_read_timeout; waiting for the response headers is one read.
		StreamResponseBody:            true,
		DisablePathNormalizing:        true,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: false,
	}
	return u, nil
}

// serve forwards ctx's request and writes the upstream's response (or an
// error page) to ctx. It returns nil, or an error wrapping
// errUpstreamUnavailable (502) / errUpstreamTimeout (504) so the caller can
// count upstream failures. A request body that breaks off or is too long
// gets 400/408/413 and nil: that is not the upstream's failure.
func (u *upstream) serve(ctx *fasthttp.RequestCtx, usage *meter.Counters) error {
	if isUpgradeRequest(&ctx.Request.Header) {
		return u.serveUpgrade(ctx)
	}

	if u.maxBody > 0 && ctx.Request.Header.ContentLength() > u.maxBody {
		ctx.SetConnectionClose() // the body is still on the connection
		u.pages.writeError(ctx, fasthttp.StatusRequestEntityTooLarge)
		return nil
	}

	req := fasthttp.AcquireRequest()
	u.prepareRequest(ctx, req)
	body := attachBody(ctx, req, u.maxBody)
	if body != nil {
		body.usage = usage
	}
	resp := fasthttp.AcquireResponse()
	err := u.hc.Do(req, resp)
	fasthttp.ReleaseRequest(req) // Do has written the request, body included
	if err == nil && resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		err = errors.New("101 Switching Protocols without an Upgrade request")
	}
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		return u.fail(ctx, err, body)
	}
	if err := relayResponse(ctx, resp, nil); err != nil {
		return u.fail(ctx, err, body)
	}
	return nil
}

// close releases idle pooled connections and ends open Upgrade tunnels.
// Responses still streaming finish on their own connections.
func (u *upstream) close() {
	u.hc.CloseIdleConnections()
	u.mu.Lock()
	u.closed = true
	tunnels := u.tunnels
	u.tunnels = nil
	u.mu.Unlock()
	for c := range tunnels {
		_ = c.Close()
	}
}

// prepareRequest fills req with ctx's request as the upstream must see it.
func (u *upstream) prepareRequest(ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	h := &req.Header
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	peer = peer.Unmap()
	trusted := u.isTrusted(peer)
	present := copyRequestHeader(h, &ctx.Request.Header, trusted)
	// Speak HTTP/1.1 whatever the visitor spoke, so the upstream keeps the
	// connection alive; fasthttp sets Content-Length/Transfer-Encoding.
	h.SetProtocol("HTTP/1.1")
	if acceptsTrailers(&ctx.Request.Header) {
		// TE is hop-by-hop, but "trailers" in it tells the upstream that
		// trailer fields reach the client (relayResponse): kept, alone, as
		// httputil.ReverseProxy keeps it.
		h.Set(fasthttp.HeaderTE, "trailers")
	}
	u.setForwarded(ctx, h, peer, trusted, present)

	// The Host header stays the visitor's (nginx would send the upstream's
	// by default): tenant apps serve their custom domains and build absolute
	// URLs, cookies and redirects from it. For an absolute-form target it is
	// the target's authority (checkFraming). The address dialed is u.addr.
	req.UseHostHeader = true
	var scratch [256]byte
	req.SetRequestURIBytes(u.appendURI(scratch[:0], ctx))
}

// acceptsTrailers reports whether a request's TE header lists "trailers".
func acceptsTrailers(h *fasthttp.RequestHeader) bool {
	for _, v := range h.PeekAll(fasthttp.HeaderTE) {
		for token := range headerTokens(v) {
			if bytes.EqualFold(token, strTrailers) {
				return true
			}
		}
	}
	return false
}

var strTrailers = []byte("trailers")

// isEndToEndRequired reports a field that a Connection header may name but
// that the proxy never drops: the request cannot be routed or framed
// without it (RFC 9110 §7.6.1 lets a proxy keep fields it relies on).
func isEndToEndRequired(name []byte) bool {
	return bytes.EqualFold(name, strHost) || bytes.EqualFold(name, strContentLength) ||
		bytes.EqualFold(name, strTransferEncoding)
}

var strHost = []byte(fasthttp.HeaderHost)

// appendURI appends the absolute URI fasthttp needs to tell http from https:
// scheme, upstream address, base path and the visitor's path and query as
// they came (no normalizing, no decoding).
func (u *upstream) appendURI(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	dst = append(dst, u.scheme...)
	dst = append(dst, "://"...)
	dst = append(dst, u.addr...)
	return u.appendOrigin(dst, ctx)
}

// appendOrigin appends the origin-form target the upstream sees: the base
// path, then the visitor's path and query.
func (u *upstream) appendOrigin(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	dst = append(dst, u.base...)
	return appendOriginForm(dst, ctx)
}

// attachBody streams ctx's request body into req, if there is one, failing
// past maxBody bytes (0: no cap). The returned requestBody tells afterwards
// whether it was read to the end.
func attachBody(ctx *fasthttp.RequestCtx, req *fasthttp.Request, maxBody int) *requestBody {
	stream := ctx.RequestBodyStream()
	if stream == nil {
		// The server buffered the body (StreamRequestBody off, or a
		// multipart form it pre-parsed).
		if b := ctx.Request.Body(); len(b) > 0 {
			req.SetBodyRaw(b)
		}
		return nil
	}
	n := ctx.Request.Header.ContentLength()
	if n == 0 {
		return nil
	}
	if n < 0 {
		n = -1 // chunked
	}
	// Wrapped: fasthttp's client releases a *requestStream body to the
	// server's pool after writing it, and the server would release it again.
	b := &requestBody{r: stream, want: n, max: maxBody}
	req.SetBodyStream(b, n)
	return b
}

// requestBody is the visitor's body on its way to the upstream.
type requestBody struct {
	r    io.Reader
	want int   // Content-Length, or -1 for chunked
	max  int   // cap, 0: none
	got  int   // bytes read so far
	eof  bool  // read to the end
	err  error // the visitor's side failed (reset, timeout, bad chunking, too long)

	usage *meter.Counters // ingress is counted here; nil: not metered
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.got += n
	if b.usage != nil && n > 0 {
		b.usage.AddIngress(n)
	}
	switch {
	case b.max > 0 && b.got > b.max:
		b.err = fasthttp.ErrBodyTooLarge
		return 0, b.err
	case err == io.EOF:
		b.eof = true
		if b.want >= 0 && b.got < b.want {
			b.err = io.ErrUnexpectedEOF
		}
	case err != nil:
		b.err = err
	}
	return n, err
}

// fail answers with tollgate's error page for err and returns it wrapped.
func (u *upstream) fail(ctx *fasthttp.RequestCtx, err error, body *requestBody) error {
	if body != nil && (!body.eof || body.err != nil) {
		// Unread request bytes are still on the connection; the next
		// "request" would start in the middle of them.
		ctx.SetConnectionClose()
	}
	if body != nil && body.err != nil {
		switch {
		case body.err == fasthttp.ErrBodyTooLarge:
			u.pages.writeError(ctx, fasthttp.StatusRequestEntityTooLarge)
		case isTimeout(body.err):
			u.pages.writeError(ctx, fasthttp.StatusRequestTimeout)
		default:
			u.pages.writeError(ctx, fasthttp.StatusBadRequest)
		}
		return nil
	}
	if isTimeout(err) {
		u.pages.writeError(ctx, fasthttp.StatusGatewayTimeout)
		return fmt.Errorf("%w: %w", errUpstreamTimeout, err)
	}
	u.pages.writeError(ctx, fasthttp.StatusBadGateway)
	return fmt.Errorf("%w: %w", errUpstreamUnavailable, err)
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrDialTimeout) || errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var t interface{ Timeout() bool } // fasthttp.ErrTimeout, net.Error, os.ErrDeadlineExceeded
	return errors.As(err, &t) && t.Timeout()
}

// retryStaleConn repeats a bodiless request that may be repeated when the
// pooled connection it went out on had been closed by the upstream (idle
// keep-alive race), like net/http's Transport. Timeouts are never repeated.
func retryStaleConn(req *fasthttp.Request, _ int, err error) (resetTimeout, retry bool) {
	switch string(req.Header.Method()) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions, fasthttp.MethodTrace,
		fasthttp.MethodPut, fasthttp.MethodDelete:
	default:
		return false, false
	}
	return false, errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// dial connects to the upstream and, for https, completes the TLS handshake,
// all within the dial timeout. ioTimeout bounds each later read and write
// (0: none); the idleConn is returned to change that for a tunnel.
func (u *upstream) dial(ioTimeout time.Duration) (net.Conn, *idleConn, error) {
	raw, err := u.dialFunc(u.addr, u.dialTimeout)
	if err != nil {
		return nil, nil, err
	}
	ic := &idleConn{Conn: raw, timeout: ioTimeout}
	if u.tls == nil {
		return ic, ic, nil
	}
	tc := tls.Client(ic, u.tls)
	hctx, cancel := context.WithTimeout(context.Background(), u.dialTimeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		_ = raw.Close()
		return nil, nil, err
	}
	return tc, ic, nil
}

// idleConn bounds each Read and Write on an upstream connection: the
// upstream must make progress at least every timeout (nginx's
// proxy_read_timeout and proxy_send_timeout), less at most a 64th of it
// (a deadline is set again only once it has moved further, nextDeadline).
// Waiting for response headers is one read, so a silent upstream gets 504
// after timeout, while a large download or an event stream that keeps
// moving is never cut off.
type idleConn struct {
	net.Conn
	timeout time.Duration // 0: no deadline; set before the conn is shared
	// The read and write deadlines set last (unix nanoseconds).
	rdSet, wdSet atomic.Int64
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.timeout > 0 {
		if t, ok := nextDeadline(&c.rdSet, c.timeout); ok {
			if err := c.Conn.SetReadDeadline(t); err != nil {
				return 0, err
			}
		}
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if c.timeout > 0 {
		if t, ok := nextDeadline(&c.wdSet, c.timeout); ok {
			if err := c.Conn.SetWriteDeadline(t); err != nil {
				return 0, err
			}
		}
	}
	return c.Conn.Write(p)
}

func trimSlash(p string) string {
	for len(p) > 0 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return p
}
