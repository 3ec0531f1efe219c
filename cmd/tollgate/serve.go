package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/proxy"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/tollgate-edge/tollgate/tokens"
)

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	lv, _ := cfg.level()
	opts := &slog.HandlerOptions{Level: lv}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs tollgate until ctx ends or a listener fails, then stops every
// part in the reverse of the order it started: the listeners stop
// accepting and in-flight requests finish (within server.shutdown_timeout),
// the certificate manager stops, the Stripe, enforcement and hook loops
// end, the meter writes (or spools) the usage counted, and the Redis client
// and the store close last.
func serve(ctx context.Context, cfg Config, demoDir string, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	slog.SetDefault(log)
	cfg.Server.applyGCPercent()
	ps := &parts{log: log}
	n, err := startNode(ctx, cfg, ps, log, demoDir)
	if err != nil {
		ps.stop(context.Background())
		return err
	}
	n.announce(stdout)
	select {
	case <-ctx.Done():
	case err = <-n.serving.failed:
		err = fmt.Errorf("listener failed: %w", err)
	}
	log.Info("shutting down", slog.Duration("timeout", cfg.Server.ShutdownTimeout))
	ps.stop(context.Background())
	log.Info("stopped")
	return err
}

// node is a tollgate process being assembled: each step of startNode builds
// parts from the ones before, starts them, and fills in the options of the
// parts still to come that use them. A part that is off (no Redis, no
// meter, no Gitea, no HTTPS) is neither started nor set in those options.
type node struct {
	cfg     Config
	log     *slog.Logger
	ps      *parts
	demoDir string
	metrics *prometheus.Registry

	st      *store.Bolt
	rc      store.RedisClient // the one client of [store] redis; nil without
	kv      *store.RedisKV    // the registry in Redis; nil without [store] redis
	records sites.Store       // where the registry lives: st or kv
	reg     *sites.Registry
	meter   *meter.Meter  // nil with [meter] disabled
	gitea   *gitea.Source // nil without [sites] gitea_url
	publish *publishGate  // the gate of gitea's new commits; nil without gitea
	tokens  *tokens.Tokens

	bound   atomic.Bool // the public and admin listeners serve (readiness)
	serving *serving

	// What the parts still to build are given, filled step by step.
	proxy    proxy.Options
	admin    admin.Options
	billing  billing.Options
	certs    acme.Options
	eventIDs stripe.EventIDs // the registry's Redis: a redelivery to another node is a duplicate too
}

// startNode builds and starts the parts of a node, in order; ps holds the
// ones started, for the caller to stop (also when startNode fails).
func startNode(ctx context.Context, cfg Config, ps *parts, log *slog.Logger, demoDir string) (*node, error) {
	n := &node{cfg: cfg, log: log, ps: ps, demoDir: demoDir, metrics: newMetrics()}
	n.admin = admin.Options{Metrics: n.metrics, Logger: log, GiteaWebhookSecret: cfg.Sites.GiteaWebhookSecret,
		Checks: []admin.Check{{Name: "listeners", Fatal: true, Run: func(context.Context) error {
			if !n.bound.Load() {
				return errors.New("listeners not bound yet")
			}
			return nil
		}}},
	}
	for _, step := range []func(context.Context) error{
		n.openStore,    // store, redis
		n.openRegistry, // registry watch (with Redis)
		n.startMeter,   // meter spool, meter (unless [meter] disabled)
		n.startContent, // site tending (with the meter or pages domains)
		n.startBilling, // hooks (if any), billing, stripe (if configured)
		n.startEdge,    // proxy, listeners, certificates (with HTTPS), serving
	} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// newMetrics is the process's one Prometheus registry, with the Go and
// process collectors and tollgate_build_info.
func newMetrics() *prometheus.Registry {
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prometheus.WrapRegistererWith(prometheus.Labels{"version": version}, metrics).MustRegister(
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "tollgate_build_info", Help: "Always 1; the version label says which build runs."}))
	return metrics
}

// openStore opens the bbolt file and, with [store] redis, the one Redis
// client that everything talking to Redis shares (registry, usage
// counters, certificates, backups). The registry then lives in Redis, and
// a node needs Redis to answer at start; once running it serves from its
// snapshot while Redis is away.
func (n *node) openStore(ctx context.Context) error {
	st, err := store.Open(n.cfg.Store)
	if err != nil {
		return err
	}
	n.ps.adopt("store", closes(st.Close))
	n.st, n.records = st, st
	n.admin.Checks = append(n.admin.Checks, admin.Check{Name: "store", Fatal: true, Run: st.Ping})
	if n.cfg.Store.Redis == "" {
		return nil
	}
	rc, err := store.NewRedis(n.cfg.Store)
	if err != nil {
		return err
	}
	n.ps.adopt("redis", closes(rc.Close))
	kv := store.NewRedisKV(rc, n.log)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := kv.Ping(pctx); err != nil {
		return fmt.Errorf("store.redis: the registry lives in Redis and it does not answer: %w", err)
	}
	n.rc, n.kv, n.records, n.eventIDs = rc, kv, kv, kv
	n.admin.Checks = append(n.admin.Checks, admin.Check{Name: "redis", Run: func(ctx context.Context) error {
		if err := kv.Ping(ctx); err != nil {
			return fmt.Errorf("unreachable, serving from the last registry snapshot: %w", err)
		}
		return nil
	}})
	return nil
}

// openRegistry loads the registry, reserves tollgate's own hostnames and
// seeds the demo; with Redis it follows the registry there and keeps the
// snapshot if Redis loses it.
func (n *node) openRegistry(ctx context.Context) error {
	reg, err := sites.New(ctx, n.records)
	if err != nil {
		return err
	}
	n.reg = reg
	// The load decoded every record: what it left behind (the JSON, the
	// growing slices) is garbage the heap would keep until the collector's
	// next goal, twice the registry. Collected and returned to the OS once,
	// here, the process starts at about the registry's size.
	debug.FreeOSMemory()
	n.ps.adopt("memory settler", closes(newSettler(reg, n.metrics, n.log).Close))
	// tollgate's own hostnames: no site may take them.
	own := []sites.ReservedName{{Name: n.cfg.Sites.PagesDomain, Subdomains: true, Key: "sites.pages_domain"}}
	if n.cfg.Billing.Stripe.Enabled() {
		own = append(own, sites.ReservedName{Name: n.cfg.Billing.Stripe.WebhookHost, Key: "billing.stripe.webhook_host"})
	}
	taken, err := reg.Reserve(own...)
	if err != nil {
		return err
	}
	for _, d := range taken {
		n.log.Warn("a site holds one of tollgate's own hostnames; detach it", slog.String("domain", d))
	}
	if n.demoDir != "" {
		if err := seedDemo(ctx, reg, n.demoDir); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	n.admin.Backups = &nodeBackups{st: n.st, reg: reg, rc: n.rc}
	if err := n.openTokens(); err != nil {
		return err
	}
	if n.kv == nil {
		return nil
	}
	watch, check := watchRegistry(n.kv, reg, n.metrics, n.log)
	n.admin.Checks = append(n.admin.Checks, check)
	return n.ps.start(ctx, "registry watch", watch)
}

// openTokens keeps the org tokens where the registry lives (the bbolt
// file, or the cluster's Redis), and checks the DNS proof of the domains
// tenants attach with the [sites] resolver.
func (n *node) openTokens() error {
	var st tokens.Store = n.st
	if n.kv != nil {
		st = n.kv
	}
	ts, err := tokens.New(st, tokens.Options{})
	if err != nil {
		return err
	}
	n.admin.Tokens, n.tokens = ts, ts
	n.admin.DomainProof = gitea.NewDNSVerifier(n.cfg.Sites.DNSResolver, n.cfg.Sites.DNSCache, gitea.DNSOptions{})
	return nil
}

// announce logs the bound addresses (the e2e tests and operators read
// them) and, with --demo, where to look.
func (n *node) announce(stdout io.Writer) {
	ln := n.serving.ln
	httpsAddr, apiAddr := "", ""
	if ln.https != nil {
		httpsAddr = ln.https.Addr().String()
	}
	if ln.api != nil {
		apiAddr = ln.api.Addr().String()
	}
	if n.demoDir != "" {
		// Before the log line: whoever waits for "tollgate started" finds
		// the URL already printed.
		_, port, _ := net.SplitHostPort(ln.http.Addr().String())
		fmt.Fprintf(stdout, "\n  demo site: http://demo.localhost:%s/\n  admin API: http://%s/v1/ (token in the config file)\n\n", port, ln.admin.Addr())
	}
	n.log.Info("tollgate started", slog.String("version", version), slog.String("http", ln.http.Addr().String()),
		slog.String("https", httpsAddr), slog.String("admin", ln.admin.Addr().String()), slog.String("api", apiAddr),
		slog.String("store", n.cfg.Store.Path))
}

// seedDemo registers org "demo", site "demo" serving dir and the domain
// demo.localhost, each only if absent, so `make run` can be run again.
func seedDemo(ctx context.Context, reg *sites.Registry, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	snap := reg.Snapshot()
	if snap.Orgs.Get("demo") == nil {
		if _, err := reg.CreateOrg(ctx, sites.Org{ID: "demo", Name: "Demo", Plan: sites.FreePlan.Name}); err != nil {
			return err
		}
	}
	if s := snap.Sites.Get("demo"); s == nil {
		if _, err := reg.CreateSite(ctx, sites.Site{ID: "demo", Org: "demo", Source: sites.Source{Type: sites.SourceDir, Path: dir}}); err != nil {
			return err
		}
	}
	if snap.Domains.Get("demo.localhost") == nil {
		if _, err := reg.AttachDomain(ctx, "demo", "demo.localhost"); err != nil {
			return err
		}
	}
	return nil
}

// httpsPort is the port in HTTP→HTTPS redirects: server.https_public_port,
// else the TLS listener's.
func httpsPort(c ServerConfig, ln net.Addr) string {
	if c.HTTPSPublicPort != 0 {
		return strconv.Itoa(c.HTTPSPublicPort)
	}
	return proxy.PortOf(ln)
}
