package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/proxy"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/valyala/fasthttp/fasthttpadaptor"
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

// serve runs tollgate until ctx ends, then shuts down in order: stop accepting,
// finish in-flight requests (bounded by server.shutdown_timeout), close the
// store.
func serve(ctx context.Context, cfg Config, demoDir string, stdout, stderr io.Writer) error {
	log := newLogger(cfg.Log, stderr)
	slog.SetDefault(log)

	st, err := store.Open(cfg.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	records, kv, closeKV, err := registryStore(ctx, cfg, st, log)
	if err != nil {
		return err
	}
	defer closeKV()
	reg, err := sites.New(ctx, records)
	if err != nil {
		return err
	}
	// tollgate's own hostnames: no site may take them.
	own := []sites.ReservedName{{Name: cfg.Sites.PagesDomain, Subdomains: true, Key: "sites.pages_domain"}}
	if cfg.Billing.Stripe.Enabled() {
		own = append(own, sites.ReservedName{Name: cfg.Billing.Stripe.WebhookHost, Key: "billing.stripe.webhook_host"})
	}
	taken, err := reg.Reserve(own...)
	if err != nil {
		return err
	}
	for _, d := range taken {
		log.Warn("a site holds one of tollgate's own hostnames; detach it", slog.String("domain", d))
	}
	if demoDir != "" {
		if err := seedDemo(ctx, reg, demoDir); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prometheus.WrapRegistererWith(prometheus.Labels{"version": version}, metrics).MustRegister(
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "tollgate_build_info", Help: "Always 1; the version label says which build runs."}))
	var registryCheck *admin.Check
	if kv != nil {
		// Cluster mode: follow the registry in Redis, and keep the snapshot
		// if Redis loses it.
		wctx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		c := watchRegistry(wctx, kv, reg, metrics, log)
		registryCheck = &c
	}

	usage := usageParts{}
	if !cfg.Meter.Disabled {
		if usage, err = newMeter(ctx, cfg, st, metrics, log); err != nil {
			return err
		}
		go usage.m.Run()
	}
	// Runs last (defers are LIFO): after the proxy stopped counting, the
	// final flush writes everything (or spools it).
	defer func() {
		if usage.m == nil {
			return
		}
		fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := usage.m.Close(fctx); err != nil {
			log.Error("usage not flushed at shutdown", slog.Any("err", err))
		}
		if usage.closeRedis != nil {
			usage.closeRedis()
		}
		usage.spool.Close()
	}()

	cache := sites.NewCache(cfg.Sites)
	popts := proxy.Options{Registry: reg, Cache: cache, Metrics: metrics, Logger: log, Orgs: reg, DefaultPlan: cfg.Billing.DefaultPlan}
	var giteaSrc *sites.Gitea
	if cfg.Sites.GiteaURL != "" {
		if giteaSrc, err = cache.NewGitea(cfg.Sites, sites.GiteaOptions{}); err != nil {
			return err
		}
		giteaSrc.Log = func(err error, repo string) {
			log.Info("tenant content problem", slog.String("repo", repo), slog.Any("err", err))
		}
		popts.Pages = giteaSrc
		if cfg.Sites.PagesDomain != "" {
			popts.PagesDomain, _ = sites.NormalizeDomain(cfg.Sites.PagesDomain)
			popts.PagesWildcard = cfg.ACME.WildcardCert != ""
		}
	}
	var claim func(*sites.GiteaRepo)
	if giteaSrc != nil && popts.PagesDomain != "" {
		dns := sites.NewDNSVerifier(cfg.Sites.DNSResolver, cfg.Sites.DNSCache, sites.DNSOptions{})
		lastErr := map[string]string{} // per repository; tendSites runs claim from one goroutine
		claim = func(r *sites.GiteaRepo) {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			err := giteaSrc.ClaimDomains(cctx, reg, dns, r, popts.PagesDomain, cfg.Billing.DefaultPlan)
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if msg != lastErr[r.Name()] && msg != "" {
				// Logged when it changes, not every round.
				log.Info("custom domains of a repository", slog.String("repo", r.Name()), slog.Any("err", err))
			}
			lastErr[r.Name()] = msg
		}
	}
	if usage.m != nil || claim != nil {
		go tendSites(ctx, reg, giteaSrc, usage.m, cfg.Sites.StorageInterval, claim, log)
	}
	if usage.m != nil {
		popts.Usage = usage.m // a nil *meter.Meter in the interface would not read as "off"
	}
	bill, webhook, closeBilling, err := newBilling(ctx, cfg, st, records, reg, usage, metrics, log)
	if err != nil {
		return err
	}
	defer closeBilling()
	popts.Gates = bill
	if webhook != nil {
		popts.Internal = append(popts.Internal, *webhook)
	}
	px, err := proxy.New(cfg.Proxy, cfg.Limits, popts)
	if err != nil {
		return err
	}
	defer px.Shutdown(context.Background())

	publicLn, err := net.Listen("tcp", cfg.Server.HTTP)
	if err != nil {
		return fmt.Errorf("server.http: %w", err)
	}
	defer publicLn.Close()
	var httpsLn net.Listener
	var certs *acme.Manager
	if cfg.Server.HTTPS != "" {
		if httpsLn, err = net.Listen("tcp", cfg.Server.HTTPS); err != nil {
			return fmt.Errorf("server.https: %w", err)
		}
		defer httpsLn.Close()
		var closeCerts func()
		var own []string
		for _, ir := range popts.Internal {
			own = append(own, ir.Host)
		}
		if certs, closeCerts, err = newCertManager(cfg, st, reg, giteaSrc, popts.PagesDomain, own, publicLn.Addr(), httpsLn.Addr(), metrics, log); err != nil {
			return err
		}
		defer closeCerts()
	}
	adminLn, err := net.Listen("tcp", cfg.Server.Admin)
	if err != nil {
		return fmt.Errorf("server.admin: %w", err)
	}

	var bound atomic.Bool
	aopts := admin.Options{
		Metrics:            metrics,
		Logger:             log,
		Usage:              usage.reader,
		GiteaWebhookSecret: cfg.Sites.GiteaWebhookSecret,
		Checks: []admin.Check{
			{Name: "listeners", Fatal: true, Run: func(context.Context) error {
				if !bound.Load() {
					return errors.New("listeners not bound yet")
				}
				return nil
			}},
			{Name: "store", Fatal: true, Run: st.Ping},
		},
	}
	if kv != nil {
		aopts.Checks = append(aopts.Checks, admin.Check{Name: "redis", Run: func(ctx context.Context) error {
			if err := kv.Ping(ctx); err != nil {
				return fmt.Errorf("unreachable, serving from the last registry snapshot: %w", err)
			}
			return nil
		}})
	}
	if registryCheck != nil {
		aopts.Checks = append(aopts.Checks, *registryCheck)
	}
	if usage.m != nil {
		// Usage that cannot be written is at risk (and quotas read stale
		// totals): fatal on the embedded store. With Redis, the redis check
		// says why and usage waits in the local spool: degraded.
		aopts.Checks = append(aopts.Checks, admin.Check{Name: "meter-flush", Fatal: cfg.Store.Redis == "", Run: usage.m.Check})
	}
	if certs != nil {
		// Fatal on the embedded store (the bbolt file); with Redis, cached
		// certificates keep serving while it is away: degraded.
		aopts.Checks = append(aopts.Checks, admin.Check{Name: "cert-storage", Fatal: cfg.Store.Redis == "", Run: certs.Ping})
	}
	if giteaSrc != nil {
		aopts.Gitea = giteaSrc
	}
	if usage.m != nil {
		aopts.Storage = usage.m
	}
	if certs != nil {
		aopts.Certs = certs
	}
	aopts.Accounts = bill
	aopts.Backups = &nodeBackups{st: st, reg: reg, redis: cfg.Store}
	adm, err := admin.New(admin.Config{Token: cfg.Server.AdminToken, MaxBodyBytes: cfg.Server.AdminMaxBodyBytes}, reg, aopts)
	if err != nil {
		adminLn.Close()
		return err
	}
	adminSrv := &http.Server{Handler: adm.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	errc := make(chan error, 3)
	if certs != nil {
		go func() { errc <- px.ServeTLS(httpsLn, certs.TLSConfig()) }()
		go func() {
			errc <- px.ServeRedirect(publicLn, proxy.RedirectOptions{
				HTTPSPort: httpsPort(cfg.Server, httpsLn.Addr()),
				Challenge: fasthttpadaptor.NewFastHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if !certs.HandleHTTPChallenge(w, r) {
						http.Error(w, "no such ACME challenge", http.StatusNotFound)
					}
				})),
			})
		}()
	} else {
		go func() { errc <- px.Serve(publicLn) }()
	}
	go func() {
		if err := adminSrv.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	bound.Store(true)
	httpsAddr := ""
	if httpsLn != nil {
		httpsAddr = httpsLn.Addr().String()
	}
	log.Info("tollgate started", slog.String("version", version), slog.String("http", publicLn.Addr().String()),
		slog.String("https", httpsAddr), slog.String("admin", adminLn.Addr().String()), slog.String("store", cfg.Store.Path))
	if demoDir != "" {
		_, port, _ := net.SplitHostPort(publicLn.Addr().String())
		fmt.Fprintf(stdout, "\n  demo site: http://demo.localhost:%s/\n  admin API: http://%s/v1/ (token in the config file)\n\n", port, adminLn.Addr())
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("listener failed: %w", err)
	}
	log.Info("shutting down", slog.Duration("timeout", cfg.Server.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	bound.Store(false)
	perr := px.Shutdown(sctx)
	aerr := adminSrv.Shutdown(sctx)
	if err := errors.Join(perr, aerr); err != nil {
		log.Warn("shutdown did not finish cleanly", slog.Any("err", err))
	}
	log.Info("stopped")
	return nil
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
	if snap.Orgs["demo"] == nil {
		if _, err := reg.CreateOrg(ctx, sites.Org{ID: "demo", Name: "Demo", Plan: sites.FreePlan.Name}); err != nil {
			return err
		}
	}
	if s := snap.Sites["demo"]; s == nil {
		if _, err := reg.CreateSite(ctx, sites.Site{ID: "demo", Org: "demo", Source: sites.Source{Type: sites.SourceDir, Path: dir}}); err != nil {
			return err
		}
	}
	if snap.Domains["demo.localhost"] == nil {
		if _, err := reg.AttachDomain(ctx, "demo", "demo.localhost"); err != nil {
			return err
		}
	}
	return nil
}

// usageParts are the meter and where usage is read back from.
type usageParts struct {
	m          *meter.Meter
	reader     admin.UsageReader
	closeRedis func() error     // nil without Redis
	spool      *meter.SpoolFile // the backlog's reserved space beside the store
}

// newMeter builds the meter on the store in use: the bbolt file on the
// embedded default; with [store] redis, Redis for the counters and the bbolt
// file as the spool for what Redis cannot take while it is down.
func newMeter(ctx context.Context, cfg Config, st *store.Bolt, metrics prometheus.Registerer, log *slog.Logger) (usageParts, error) {
	node, err := meter.NodeID(ctx, st)
	if err != nil {
		return usageParts{}, err
	}
	local := meter.NewBolt(st)
	mc := cfg.Meter
	mc.Defaults()
	spool, err := meter.OpenSpoolFile(cfg.Store.Path+".spool", mc.SpoolBytes)
	if err != nil {
		return usageParts{}, err
	}
	opts := meter.Options{Sink: local, Journal: spool, Node: node, Metrics: metrics, Logger: log}
	parts := usageParts{reader: local, spool: spool}
	if cfg.Store.Redis != "" {
		rc, err := store.NewRedis(cfg.Store)
		if err != nil {
			spool.Close()
			return usageParts{}, err
		}
		parts.closeRedis = rc.Close
		rs := meter.NewRedis(rc, meter.RedisOptions{Retention: cfg.Meter.HourlyRetention})
		opts.Sink, opts.Spool, parts.reader, opts.StoreName = rs, local, rs, "redis"
		if err := rc.Ping(ctx).Err(); err != nil {
			// Fail open: serve and count; usage waits in memory, then in
			// the spool, until Redis answers.
			log.Warn("redis unreachable at start; usage will be kept until it answers", slog.Any("err", err))
		}
	}
	parts.m, err = meter.New(cfg.Meter, opts)
	if err != nil {
		spool.Close()
		if parts.closeRedis != nil {
			parts.closeRedis()
		}
		return usageParts{}, err
	}
	return parts, nil
}

// newCertManager builds the certificate manager on the store in use: the
// bbolt file on the embedded default, Redis (shared by the cluster) when
// [store] redis is set.
func newCertManager(cfg Config, st *store.Bolt, reg *sites.Registry, giteaSrc *sites.Gitea, pagesDomain string, own []string,
	httpAddr, httpsAddr net.Addr, metrics prometheus.Registerer, log *slog.Logger) (*acme.Manager, func(), error) {
	var storage certmagic.Storage = acme.NewBoltStorage(st)
	closeStorage := func() {}
	if cfg.Store.Redis != "" {
		rc, err := store.NewRedis(cfg.Store)
		if err != nil {
			return nil, nil, err
		}
		rs := acme.NewRedisStorage(rc, acme.RedisStorageOptions{})
		storage, closeStorage = rs, func() { rs.Close(); rc.Close() }
	}
	opts := acme.Options{Storage: storage, Hosts: reg, PagesDomain: pagesDomain, Names: own,
		HTTPAddr: httpAddr.String(), HTTPSAddr: httpsAddr.String(), Metrics: metrics, Logger: log}
	if giteaSrc != nil {
		opts.Owners = giteaSrc
	}
	m, err := acme.New(cfg.ACME, opts)
	if err != nil {
		closeStorage()
		return nil, nil, err
	}
	return m, func() { m.Close(); closeStorage() }, nil
}

// registryStore is where the registry (and the account history) lives: the
// bbolt file, or with [store] redis the Redis all nodes share. A cluster
// node needs Redis at start; once running it serves from its snapshot while
// Redis is away.
func registryStore(ctx context.Context, cfg Config, st *store.Bolt, log *slog.Logger) (sites.Store, *store.RedisKV, func(), error) {
	if cfg.Store.Redis == "" {
		return st, nil, func() {}, nil
	}
	rc, err := store.NewRedis(cfg.Store)
	if err != nil {
		return nil, nil, func() {}, err
	}
	kv := store.NewRedisKV(rc, log)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := kv.Ping(pctx); err != nil {
		rc.Close()
		return nil, nil, func() {}, fmt.Errorf("store.redis: the registry lives in Redis and it does not answer: %w", err)
	}
	return kv, kv, func() { rc.Close() }, nil
}

// httpsPort is the port in HTTP→HTTPS redirects: server.https_public_port,
// else the TLS listener's.
func httpsPort(c ServerConfig, ln net.Addr) string {
	if c.HTTPSPublicPort != 0 {
		return strconv.Itoa(c.HTTPSPublicPort)
	}
	return proxy.PortOf(ln)
}
