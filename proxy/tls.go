package proxy

import (
	"crypto/tls"
	"net"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// ServeTLS accepts TLS connections on ln until Shutdown. cfg supplies the
// certificates (acme.Manager.TLSConfig); its NextProtos should offer "h2",
// which is served by serveH2 through the same Handler. The bytes metered
// are the plaintext ones, so HTTPS costs a tenant what HTTP does.
func (p *Proxy) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	ln = p.guard(ln, listenerHTTPS)
	return p.server.Serve(newParkListener(&tlsListener{Listener: ln, cfg: cfg, m: p.metrics}, p.limits))
}

type tlsListener struct {
	net.Listener
	cfg *tls.Config
	m   *metrics
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	raw := &rawCounter{Conn: c}
	tc := tls.Server(raw, l.cfg)
	conn := &tlsConn{tls: tc, m: l.m}
	conn.meteredConn.init(tc)
	conn.raw = raw
	return conn, nil
}

// tlsConn is a metered TLS connection. It implements what fasthttp looks for
// in a TLS connection (Handshake, ConnectionState): fasthttp handshakes it,
// reads the ALPN result and hands "h2" connections to serveH2.
type tlsConn struct {
	meteredConn
	tls       *tls.Conn
	m         *metrics
	handshook bool   // Handshake runs on the connection's goroutine only
	sni       string // the normalized server name, once handshook
}

func (c *tlsConn) Handshake() error {
	err := c.tls.Handshake()
	if !c.handshook {
		c.handshook = true
		if err != nil {
			c.m.handshakeFailures.Inc()
		} else {
			cs := c.tls.ConnectionState()
			c.m.handshake(cs.NegotiatedProtocol)
			c.sni = strings.TrimSuffix(strings.ToLower(cs.ServerName), ".")
		}
	}
	return err
}

func (c *tlsConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// RedirectOptions configure the plain-HTTP listener when HTTPS is on.
type RedirectOptions struct {
	// HTTPSPort is the port in the redirect target; "443" is left out.
	HTTPSPort string
	// Challenge answers ACME HTTP-01 requests (paths under
	// /.well-known/acme-challenge/); nil: none.
	Challenge fasthttp.RequestHandler
}

var acmeChallengePath = []byte("/.well-known/acme-challenge/")

// ServeRedirect serves the plain-HTTP listener when HTTPS is on, through the
// same steps as Handler (handle): ACME HTTP-01 challenges, and for every
// host tollgate serves a 308 to the same URL over HTTPS (308 keeps the
// method and body). Unknown hosts get 404, as on HTTPS.
func (p *Proxy) ServeRedirect(ln net.Listener, opts RedirectOptions) error {
	ln = p.guard(ln, listenerHTTP)
	h := func(ctx *fasthttp.RequestCtx) { p.handle(ctx, &opts) }
	// Nothing on this listener reads a body: an Expect: 100-continue
	// request gets its final answer at once.
	s := p.newServer(h, func(ctx *fasthttp.RequestCtx) int {
		h(ctx)
		if mc := metered(ctx.Conn()); mc != nil {
			mc.linger.Store(true)
		}
		return ctx.Response.StatusCode()
	})
	p.mu.Lock()
	p.extra = append(p.extra, s)
	p.mu.Unlock()
	return s.Serve(meteredListener{ln})
}

// serveChallenge answers an ACME HTTP-01 challenge; it takes no body.
func (p *Proxy) serveChallenge(ctx *fasthttp.RequestCtx, challenge fasthttp.RequestHandler) {
	if hasBody(&ctx.Request.Header) {
		p.errPages.reject(ctx, fasthttp.StatusRequestEntityTooLarge)
		return
	}
	challenge(ctx)
}

// redirectHTTPS answers 308 to the same URL over HTTPS. The target is
// built from the normalized host key and the request's own path and query,
// never from an absolute-form target as sent.
func redirectHTTPS(ctx *fasthttp.RequestCtx, key []byte, httpsPort string) {
	loc := make([]byte, 0, 16+len(key)+len(ctx.RequestURI()))
	loc = append(loc, "https://"...)
	loc = append(loc, key...)
	if httpsPort != "" && httpsPort != "443" {
		loc = append(loc, ':')
		loc = append(loc, httpsPort...)
	}
	loc = appendOriginForm(loc, ctx)
	ctx.Response.Header.SetBytesV(fasthttp.HeaderLocation, loc)
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
}

// appendOriginForm appends the request's path and query as they came (no
// normalizing, no decoding): the request target itself when it is in
// origin form, the path and query of an absolute-form target, "/" for "*".
func appendOriginForm(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	if uri := ctx.Request.Header.RequestURI(); len(uri) > 0 && uri[0] == '/' {
		return append(dst, uri...)
	}
	path := ctx.URI().PathOriginal()
	if len(path) == 0 || path[0] != '/' {
		dst = append(dst, '/')
	}
	dst = append(dst, path...)
	if q := ctx.URI().QueryString(); len(q) > 0 {
		dst = append(dst, '?')
		dst = append(dst, q...)
	}
	return dst
}

// misdirected reports a request over TLS for a host the connection's
// certificate was not chosen for (RFC 9110 §15.5.20: 421, the client
// retries on a connection of its own). Certificates are per name, so the
// Host must be the TLS server name; with the pages wildcard certificate,
// any two pages hosts may share a connection, as browsers do.
func (p *Proxy) misdirected(c net.Conn, key []byte) bool {
	sni := tlsServerName(c)
	if sni == "" || sni == string(key) {
		return false
	}
	if p.pagesWildcard {
		_, a := pagesOwner(key, p.pagesSuffix)
		_, b := pagesOwner([]byte(sni), p.pagesSuffix)
		return !(a && b)
	}
	return true
}

// tlsServerName is the normalized TLS server name of a client connection or
// of the connection an h2 stream is on; "" for plain connections.
func tlsServerName(c net.Conn) string {
	switch c := c.(type) {
	case *tlsConn:
		return c.sni
	case *h2Stream:
		if tc, ok := c.conn.(*tlsConn); ok {
			return tc.sni
		}
	}
	return ""
}

// PortOf returns the port of a listener address ("" when it has none).
func PortOf(addr net.Addr) string {
	_, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return ""
	}
	if _, err := strconv.Atoi(port); err != nil {
		return ""
	}
	return port
}
