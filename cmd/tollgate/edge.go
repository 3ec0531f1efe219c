package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/proxy"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// startEdge builds the proxy, binds the listeners of [server], builds the
// certificate manager when [server] https is set and the admin API, and
// starts serving: the last part to start and the first to stop.
func (n *node) startEdge(ctx context.Context) error {
	n.proxy.Registry, n.proxy.Orgs, n.proxy.DefaultPlan = n.reg, n.reg, n.cfg.Billing.DefaultPlan
	n.proxy.Metrics, n.proxy.Logger = n.metrics, n.log
	pages, err := proxy.LoadErrorPages(n.cfg.pagesConfig())
	if err != nil {
		return err
	}
	n.proxy.ErrorPages = pages
	px, err := proxy.New(n.cfg.Proxy, n.cfg.Limits, n.proxy)
	if err != nil {
		return err
	}
	n.ps.adopt("proxy", px.Shutdown) // releases every site's resources
	ln, err := listen(n.cfg.Server)
	if err != nil {
		return err
	}
	n.ps.adopt("listeners", closes(ln.close))
	s := &serving{px: px, ln: ln, bound: &n.bound, failed: make(chan error, 4)}
	if ln.https != nil {
		certs, err := n.newCerts(ln)
		if err != nil {
			return err
		}
		s.tls = certs.TLSConfig()
		s.redirect = proxy.RedirectOptions{
			HTTPSPort: httpsPort(n.cfg.Server, ln.https.Addr()),
			Challenge: fasthttpadaptor.NewFastHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !certs.HandleHTTPChallenge(w, r) {
					http.Error(w, "no such ACME challenge", http.StatusNotFound)
				}
			})),
		}
	}
	adm, err := admin.New(n.cfg.Server.adminConfig(), n.reg, n.admin)
	if err != nil {
		return err
	}
	s.admin = &http.Server{Handler: adm.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn)}
	if ln.api != nil {
		h, err := n.tenantHandler(adm.APIHandler())
		if err != nil {
			return err
		}
		s.api = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn)}
		if n.cfg.Server.APITLS {
			s.api.TLSConfig = s.tls.Clone()
			s.api.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
		}
	}
	n.serving = s
	return n.ps.start(ctx, "serving", stopWithin(n.cfg.Server.ShutdownTimeout, s))
}

// newCerts builds the certificate manager on the store in use: the bbolt
// file on the embedded default, Redis (shared by the cluster) when [store]
// redis is set. It answers HTTP-01 and TLS-ALPN-01 challenges on ln.
func (n *node) newCerts(ln *listeners) (*acme.Manager, error) {
	var storage certmagic.Storage = acme.NewBoltStorage(n.st)
	if n.rc != nil {
		rs := acme.NewRedisStorage(n.rc, acme.RedisStorageOptions{})
		n.ps.adopt("certificate locks", closes(rs.Close))
		storage = rs
	}
	opts := n.certs // Owners comes from the Gitea source
	opts.Storage, opts.Hosts, opts.PagesDomain = storage, n.reg, n.proxy.PagesDomain
	for _, ir := range n.proxy.Internal {
		opts.Names = append(opts.Names, ir.Host)
	}
	if n.cfg.Server.APITLS {
		host, _ := sites.NormalizeDomain(n.cfg.Server.APIHost) // valid: Config.Validate
		opts.Names = append(opts.Names, host)
	}
	opts.HTTPAddr, opts.HTTPSAddr = ln.http.Addr().String(), ln.https.Addr().String()
	opts.Metrics, opts.Logger = n.metrics, n.log
	m, err := acme.New(n.cfg.ACME, opts)
	if err != nil {
		return nil, err
	}
	n.ps.adopt("certificates", closes(m.Close))
	n.admin.Certs = m
	// Fatal on the embedded store (the bbolt file); with Redis, cached
	// certificates keep serving while it is away: degraded.
	n.admin.Checks = append(n.admin.Checks, admin.Check{Name: "cert-storage", Fatal: n.cfg.Store.Redis == "", Run: m.Ping})
	return m, nil
}

// listeners are the node's bound sockets: public HTTP, HTTPS when [server]
// https is set (else nil), the admin API's, and the tenant API's when
// [server] api is set (else nil).
type listeners struct {
	http, https, admin, api net.Listener
}

// listen binds the listeners of [server], or none.
func listen(cfg ServerConfig) (*listeners, error) {
	ln := &listeners{}
	var err error
	if ln.http, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, fmt.Errorf("server.http: %w", err)
	}
	if cfg.HTTPS != "" {
		if ln.https, err = net.Listen("tcp", cfg.HTTPS); err != nil {
			ln.close()
			return nil, fmt.Errorf("server.https: %w", err)
		}
	}
	if ln.admin, err = net.Listen("tcp", cfg.Admin); err != nil {
		ln.close()
		return nil, fmt.Errorf("server.admin: %w", err)
	}
	if cfg.API != "" {
		if ln.api, err = net.Listen("tcp", cfg.API); err != nil {
			ln.close()
			return nil, fmt.Errorf("server.api: %w", err)
		}
	}
	return ln, nil
}

// close closes the sockets that serving did not already close.
func (ln *listeners) close() error {
	for _, l := range []net.Listener{ln.http, ln.https, ln.admin, ln.api} {
		if l != nil {
			l.Close()
		}
	}
	return nil
}

// serving is the proxy on the public listeners, the admin API on its
// own, and the tenant API on its own when [server] api is set. Stopping it is the graceful part of a shutdown: readiness turns
// false, every listener stops accepting, and in-flight requests finish
// until ctx ends (server.shutdown_timeout), public ones first.
type serving struct {
	px       *proxy.Proxy
	ln       *listeners
	tls      *tls.Config // nil without HTTPS
	redirect proxy.RedirectOptions
	admin    *http.Server
	api      *http.Server // nil without [server] api; TLSConfig set with api_tls
	bound    *atomic.Bool // read by the "listeners" readiness check
	failed   chan error   // a listener that stopped serving before Stop
}

func (s *serving) Start(context.Context) error {
	if s.tls != nil {
		go func() { s.failed <- s.px.ServeTLS(s.ln.https, s.tls) }()
		go func() { s.failed <- s.px.ServeRedirect(s.ln.http, s.redirect) }()
	} else {
		go func() { s.failed <- s.px.Serve(s.ln.http) }()
	}
	go func() {
		if err := s.admin.Serve(s.ln.admin); !errors.Is(err, http.ErrServerClosed) {
			s.failed <- err
		}
	}()
	if s.api != nil {
		go func() {
			var err error
			if s.api.TLSConfig != nil {
				err = s.api.ServeTLS(s.ln.api, "", "")
			} else {
				err = s.api.Serve(s.ln.api)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				s.failed <- err
			}
		}()
	}
	s.bound.Store(true)
	return nil
}

func (s *serving) Stop(ctx context.Context) error {
	s.bound.Store(false)
	perr := s.px.Shutdown(ctx)
	aerr := s.admin.Shutdown(ctx)
	var terr error
	if s.api != nil {
		terr = s.api.Shutdown(ctx)
	}
	if err := errors.Join(perr, aerr, terr); err != nil {
		return fmt.Errorf("shutdown did not finish cleanly: %w", err)
	}
	return nil
}
