package proxy

import (
	"bytes"
	"crypto/tls"
	"net"
	"strconv"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
)

// ServeTLS accepts TLS connections on ln until Shutdown. cfg supplies the
// certificates (acme.Manager.TLSConfig); its NextProtos should offer "h2",
// which is served by serveH2 through the same Handler. The bytes metered
// are the plaintext ones, so HTTPS costs a tenant what HTTP does.
func (p *Proxy) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	return p.server.Serve(&tlsListener{Listener: ln, cfg: cfg, m: p.metrics})
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
	tc := tls.Server(c, l.cfg)
	return &tlsConn{meteredConn: meteredConn{Conn: tc}, tls: tc, m: l.m}, nil
}

// tlsConn is a metered TLS connection. It implements what fasthttp looks for
// in a TLS connection (Handshake, ConnectionState): fasthttp handshakes it,
// reads the ALPN result and hands "h2" connections to serveH2.
type tlsConn struct {
	meteredConn
	tls       *tls.Conn
	m         *metrics
	handshook bool // Handshake runs on the connection's goroutine only
}

func (c *tlsConn) Handshake() error {
	err := c.tls.Handshake()
	if !c.handshook {
		c.handshook = true
		if err != nil {
			c.m.handshakeFailures.Inc()
		} else {
			c.m.handshake(c.tls.ConnectionState().NegotiatedProtocol)
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

// ServeRedirect serves the plain-HTTP listener when HTTPS is on: ACME HTTP-01
// challenges, and for every host tollgate serves a 308 to the same URL over
// HTTPS (308 keeps the method and body). Unknown hosts get 404, as on HTTPS.
func (p *Proxy) ServeRedirect(ln net.Listener, opts RedirectOptions) error {
	s := p.newServer(func(ctx *fasthttp.RequestCtx) { p.redirectHandler(ctx, opts) })
	p.mu.Lock()
	p.extra = append(p.extra, s)
	p.mu.Unlock()
	return s.Serve(meteredListener{ln})
}

func (p *Proxy) redirectHandler(ctx *fasthttp.RequestCtx, opts RedirectOptions) {
	start := ctx.Time()
	kind := kindNone
	defer func() { p.measure(ctx, kind, start) }()
	if opts.Challenge != nil && bytes.HasPrefix(ctx.Path(), acmeChallengePath) {
		charge(ctx.Conn(), nil) // the CA's requests are nobody's usage
		opts.Challenge(ctx)
		return
	}
	var buf [sites.MaxHostLen + 8]byte
	key, err := sites.AppendHostKey(buf[:0], ctx.Host())
	var r *route
	routable := false
	if err == nil {
		r = p.table.Load().hosts[string(key)]
		routable = r != nil || p.internal[string(key)] != nil
		if !routable && p.pagesSuffix != "" {
			_, routable = pagesOwner(key, p.pagesSuffix)
		}
	}
	p.chargeRoute(ctx, r)
	switch {
	case err != nil:
		writeError(ctx, fasthttp.StatusBadRequest)
		return
	case !routable:
		writeError(ctx, fasthttp.StatusNotFound)
		return
	}
	if r != nil {
		kind = r.rt.kind
	}
	loc := make([]byte, 0, 16+len(key)+len(ctx.RequestURI()))
	loc = append(loc, "https://"...)
	loc = append(loc, key...)
	if opts.HTTPSPort != "" && opts.HTTPSPort != "443" {
		loc = append(loc, ':')
		loc = append(loc, opts.HTTPSPort...)
	}
	loc = append(loc, ctx.RequestURI()...)
	ctx.Response.Header.SetBytesV(fasthttp.HeaderLocation, loc)
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
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
