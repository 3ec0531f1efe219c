// Package proxy is tollgate's request path: it routes each request by Host to a
// site and serves it, from a local directory or by reverse-proxying a tenant
// instance, on fasthttp. It reads only in-memory snapshots: a cached hit does
// no I/O and no allocation.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/ratelimit"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/valyala/fasthttp"
)

// Registry is what the proxy needs of the site registry: to follow its
// snapshots. *sites.Registry implements it.
type Registry interface {
	OnChange(fn func(*sites.Snapshot, *sites.Delta))
}

// Options are the proxy's collaborators.
type Options struct {
	Registry Registry              // required
	Cache    *content.Cache        // required: content cache of dir sites
	Metrics  prometheus.Registerer // required: the process's one registry
	Logger   *slog.Logger          // default slog.Default()
	// Usage counts egress, ingress and requests per org and site; nil turns
	// metering off (for benchmarks).
	Usage Usage
	// Pages serves Gitea repositories: "gitea" sites, and with PagesDomain
	// every {owner}.{PagesDomain}. Nil: no Gitea.
	Pages Pages
	// PagesDomain is [sites] pages_domain, normalized; "" turns pages off.
	PagesDomain string
	// PagesWildcard: [acme] wildcard_cert serves every pages host, so one
	// TLS connection may carry requests for several of them (browsers
	// coalesce); otherwise a TLS connection serves only its server name.
	PagesWildcard bool
	// Orgs creates the synthetic org of a Gitea owner on its first request,
	// on DefaultPlan. Required with PagesDomain. *sites.Registry implements it.
	Orgs OrgMaker
	// DefaultPlan is [billing] default_plan.
	DefaultPlan string
	// Gates answers, per org, allow, throttle or block (package billing);
	// nil: only a suspended org's state blocks (403).
	Gates Gates
	// Internal are tollgate's own endpoints on the public listeners (the
	// Stripe webhook), by host and exact path. They are not metered.
	Internal []InternalRoute
	// ErrorPages are the pages of errors and refusals (LoadErrorPages);
	// nil: the built-in ones, without a renewal link.
	ErrorPages *ErrorPages
}

// InternalRoute is one of tollgate's own endpoints on the public listeners.
type InternalRoute struct {
	Host    string // normalized hostname
	Path    string
	Handler fasthttp.RequestHandler
	// MaxBody bounds the request body the handler gets, read whole before
	// it runs; longer bodies get 413 without being read. 0: no body.
	MaxBody int
}

// Gates hands out each org's enforcement gate, a stable pointer the request
// path reads with one atomic load. *billing.Billing implements it.
type Gates interface {
	Gate(org string) *access.Gate
}

// Proxy serves the public listener.
type Proxy struct {
	cfg     Config
	limits  Limits
	trusted []netip.Prefix
	cache   *content.Cache
	log     *slog.Logger
	usage   Usage
	gates   Gates
	// internal maps a host to its internal routes; immutable after New.
	internal map[string][]InternalRoute
	pages    Pages
	errPages *ErrorPages // never nil
	orgs     OrgMaker
	plan     string
	// pagesSuffix is "."+pages_domain, "" when pages are off.
	pagesSuffix   string
	pagesWildcard bool                       // see Options.PagesWildcard
	owners        atomic.Pointer[ownerCache] // reset with every snapshot
	snap          atomic.Pointer[sites.Snapshot]
	metrics       *metrics
	// Request-rate limits (ratelimit.go): clientRates is nil when
	// limits.per_ip_rps is off; rateKeys hashes their keys.
	clientRates *clientRates
	orgRates    *orgRates
	rateKeys    ratelimit.Keys
	server      *fasthttp.Server // the public listeners: HTTP, and HTTPS with h2 handed to h2
	h2          *h2Server

	table atomic.Pointer[table] // what the request path reads

	mu      sync.Mutex // guards runtime, failed, extra and closed; held while applying a snapshot
	runtime map[string]*siteRuntime
	failed  map[string]bool    // sites whose runtime has an error: reopened at every registry change
	extra   []*fasthttp.Server // the redirecting HTTP listener, when HTTPS is on
	closed  bool
}

// route is everything the request path needs for one host.
type route struct {
	site  *sites.Site
	org   *sites.Org
	rt    *siteRuntime
	usage *meter.Counters // nil when metering is off
	gate  *access.Gate    // nil without billing
	hsts  []byte          // Strict-Transport-Security (hsts.go); nil: none
	// rate is the org's request-rate limit; rateScope keys the site's
	// per-client buckets (ratelimit.go).
	rate      *orgRate
	rateScope uint64
}

// siteRuntime holds a site's open resources: its content (a directory or a
// Gitea repository) or an upstream pool. It is reused across snapshots while
// the site's source stays the same.
type siteRuntime struct {
	source  sites.Source
	kind    int
	content contentSource      // dir and gitea sites
	dir     *content.DirSource // the content of a dir site, to close
	up      *upstream
	err     error // why the source could not be opened; the site answers 503
}

func (rt *siteRuntime) close() {
	if rt.dir != nil {
		rt.dir.Close()
	}
	if rt.up != nil {
		rt.up.close()
	}
}

// New builds the proxy and subscribes it to the registry.
func New(cfg Config, limits Limits, opts Options) (*Proxy, error) {
	cfg.Defaults()
	limits.Defaults()
	if err := errors.Join(cfg.Validate(), limits.Validate()); err != nil {
		return nil, err
	}
	if opts.Registry == nil || opts.Cache == nil || opts.Metrics == nil {
		return nil, errors.New("proxy: Options.Registry, Cache and Metrics are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	trusted, _ := parsePrefixes(cfg.TrustedProxies)
	keys := ratelimit.NewKeys()
	p := &Proxy{
		cfg: cfg, limits: limits, trusted: trusted, cache: opts.Cache, log: opts.Logger, usage: opts.Usage, gates: opts.Gates,
		pages: opts.Pages, errPages: opts.ErrorPages.get(), orgs: opts.Orgs, plan: opts.DefaultPlan,
		metrics: newMetrics(opts.Metrics, opts.Cache),
		runtime: map[string]*siteRuntime{}, failed: map[string]bool{},
		clientRates: newClientRates(limits, keys), rateKeys: keys,
		orgRates: &orgRates{nodes: float64(limits.ClusterNodes), m: map[string]*orgRate{}},
	}
	p.table.Store(&table{})
	for _, ir := range opts.Internal {
		if p.internal == nil {
			p.internal = map[string][]InternalRoute{}
		}
		p.internal[ir.Host] = append(p.internal[ir.Host], ir)
	}
	p.owners.Store(newOwnerCache())
	registerGiteaMetrics(opts.Metrics, opts.Pages)
	if opts.PagesDomain != "" {
		if opts.Pages == nil || opts.Orgs == nil {
			return nil, errors.New("proxy: PagesDomain needs Options.Pages and Options.Orgs")
		}
		p.pagesSuffix = "." + opts.PagesDomain
		p.pagesWildcard = opts.PagesWildcard
	}
	if p.plan == "" {
		p.plan = sites.FreePlan.Name
	}
	p.server = p.newServer(p.Handler, p.expectContinue)
	p.h2 = newH2(p)
	p.server.NextProto("h2", p.serveH2)
	opts.Registry.OnChange(p.apply)
	return p, nil
}

// newServer is a fasthttp server with the [limits] of the public listeners.
// expect answers "Expect: 100-continue" requests (see expectContinue).
func (p *Proxy) newServer(h fasthttp.RequestHandler, expect func(*fasthttp.RequestCtx) int) *fasthttp.Server {
	limits := p.limits
	return &fasthttp.Server{
		Handler:        h,
		ExpectHandler:  expect,
		ErrorHandler:   p.errorHandler,
		Name:           serverName,
		ReadBufferSize: limits.MaxHeaderBytes,
		// Large enough for the headers and a small file in one write(2):
		// fasthttp's 4 KiB default splits a 4 KiB page into two syscalls.
		// Writers are pooled per response, not held per connection.
		WriteBufferSize:    writeBufferSize,
		MaxRequestBodySize: limits.MaxBodyBytes,
		StreamRequestBody:  true,
		ReadTimeout:        limits.ReadTimeout,
		WriteTimeout:       limits.WriteTimeout,
		IdleTimeout:        limits.IdleTimeout,
		Concurrency:        limits.Concurrency,
		// A worker goroutine idle this long exits, and its stack (grown by
		// TLS handshakes and handlers) with it: a burst of connections that
		// park afterwards leaves no pool of idle stacks behind. fasthttp's
		// default is 10s; a goroutine costs a microsecond to start again.
		MaxIdleWorkerDuration:        time.Second,
		DisablePreParseMultipartForm: true,
		// Errors name what was wrong, never the request's bytes: they may
		// carry credentials, and fasthttp's messages reach the logs.
		SecureErrorLogMessage: true,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{p.log},
		// Marks connections idle between requests, to be parked (park.go).
		ConnState: connState,
	}
}

// serverName is the Server header of every response tollgate makes itself.
const serverName = "tollgate"

func (p *Proxy) open(site *sites.Site) *siteRuntime {
	rt := &siteRuntime{source: site.Source}
	switch site.Source.Type {
	case sites.SourceDir:
		rt.kind = kindDir
		rt.dir, rt.err = p.cache.OpenDir(site.Source.Path)
		if rt.dir != nil {
			rt.content = rt.dir
		}
	case sites.SourceUpstream:
		rt.kind = kindUpstream
		rt.up, rt.err = newUpstream(site.Source.URL, p.cfg, p.trusted)
		if rt.up != nil {
			// fasthttp does not enforce MaxRequestBodySize on streamed bodies:
			// the upstream proxy counts them and answers 413.
			rt.up.maxBody = p.limits.MaxBodyBytes
			rt.up.pages = p.errPages
		}
	case sites.SourceGitea:
		rt.kind = kindGitea
		if p.pages == nil {
			rt.err = errors.New("gitea site, but no [sites] gitea_url is configured")
			break
		}
		rt.content = p.pages.Repo(site.Source.Owner, site.Source.Repo, site.Source.Branch)
	default:
		rt.err = fmt.Errorf("unknown source type %q", site.Source.Type)
	}
	if rt.err != nil {
		p.log.Error("site unavailable: its source cannot be opened", slog.String("site", site.ID), slog.Any("err", rt.err))
	}
	return rt
}

// writeBufferSize is the response write buffer (see New).
const writeBufferSize = 32 << 10

// Serve accepts connections on ln until Shutdown.
func (p *Proxy) Serve(ln net.Listener) error {
	ln = p.guard(ln, listenerHTTP)
	return p.server.Serve(newParkListener(meteredListener{ln}, p.limits))
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then releases every site's resources. Safe to call more than once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	extra := p.extra
	p.mu.Unlock()
	p.h2.shutdownAll(ctx) // GOAWAY to h2 clients, so their connections end
	errs := []error{p.server.ShutdownWithContext(ctx)}
	for _, s := range extra {
		errs = append(errs, s.ShutdownWithContext(ctx))
	}
	err := errors.Join(errs...)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		for _, rt := range p.runtime {
			rt.close()
		}
		p.runtime = nil
	}
	return err
}

// fasthttpLogger passes fasthttp's messages to slog at Debug level: they are
// about clients that sent something unreadable, which errorHandler already
// answered; logging them louder would let any client fill the logs.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	if f.l.Enabled(context.Background(), slog.LevelDebug) {
		f.l.Debug(fmt.Sprintf(format, args...), slog.String("component", "fasthttp"))
	}
}
