// Command peerbench measures tollgate beside nginx and Caddy in one run, on
// the same machine, with the same content, and writes one table of req/s,
// p99 latency and tollgate's ratio to each peer (see bench/README.md).
//
//	peerbench [-rounds N] [-duration D] [-connections C] [-threads T] [-only IDS] ...
//
// `make bench` installs the peers, builds bin/tollgate and runs it.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == upstreamSubcommand {
		if err := serveUpstream(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "peerbench upstream:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 5 && os.Args[1] == floorSubcommand {
		if err := serveFloor(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			fmt.Fprintln(os.Stderr, "peerbench floor:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == handshakeSubcommand {
		os.Exit(handshakeClient(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// settings are the knobs of one run; flags default to BENCH_* variables.
type settings struct {
	Rounds      int           `json:"rounds"`
	Duration    time.Duration `json:"duration_ns"`
	Warmup      time.Duration `json:"warmup_ns"`
	Connections int           `json:"connections"`
	Threads     int           `json:"threads"`
	Streams     int           `json:"streams"`
	Sites       int           `json:"sites"`
	IdleConns   int           `json:"idle_conns"`
	// RegistrySizes are the registry sizes of registry-scale, "10000,...".
	RegistrySizes string `json:"registry_sizes"`
	// RegistrySource is the source type of its sites: dir or upstream.
	RegistrySource string `json:"registry_source"`
	Only           string `json:"only,omitempty"`
	Tollgate       string `json:"-"`
	Out            string `json:"-"`
	Keep           bool   `json:"-"`
}

func parseSettings(args []string, stderr io.Writer) (settings, error) {
	var s settings
	var errs []error
	envInt := func(name string, def int) int {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Errorf("%s: %q is not a count", name, v))
			}
			return n
		}
		return def
	}
	envDur := func(name string, def time.Duration) time.Duration {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			return d
		}
		return def
	}
	fs := flag.NewFlagSet("peerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&s.Rounds, "rounds", envInt("BENCH_ROUNDS", 3), "rounds; each runs every server once, in turn (env BENCH_ROUNDS)")
	fs.DurationVar(&s.Duration, "duration", envDur("BENCH_DURATION", 5*time.Second), "length of one load run, whole seconds for wrk (env BENCH_DURATION)")
	fs.DurationVar(&s.Warmup, "warmup", envDur("BENCH_WARMUP", time.Second), "unrecorded load run per server before the rounds; 0 skips (env BENCH_WARMUP)")
	fs.IntVar(&s.Connections, "connections", envInt("BENCH_CONNECTIONS", 64), "wrk and h2load connections; handshake client concurrency (env BENCH_CONNECTIONS)")
	fs.IntVar(&s.Threads, "threads", envInt("BENCH_THREADS", 1), "wrk and h2load threads (env BENCH_THREADS)")
	fs.IntVar(&s.Streams, "streams", envInt("BENCH_STREAMS", 10), "h2load concurrent streams per h2 connection, https-h2 (env BENCH_STREAMS)")
	fs.IntVar(&s.Sites, "sites", envInt("BENCH_SITES", 10000), "sites of the memory scenario (env BENCH_SITES)")
	fs.IntVar(&s.IdleConns, "idle-conns", envInt("BENCH_IDLE_CONNS", 10000),
		"keep-alive connections of the idle scenarios, fewer if the descriptor limit cannot hold them (env BENCH_IDLE_CONNS)")
	fs.StringVar(&s.RegistrySizes, "registry-sizes", cmp.Or(os.Getenv("BENCH_REGISTRY_SIZES"), defaultRegistrySizes),
		"comma-separated site counts of the registry-scale scenario, a fresh tollgate each (env BENCH_REGISTRY_SIZES)")
	fs.StringVar(&s.RegistrySource, "registry-source", cmp.Or(os.Getenv("BENCH_REGISTRY_SOURCE"), "dir"),
		"source of the registry scenarios' sites: dir (the benchmark directory) or upstream (the shared upstream) (env BENCH_REGISTRY_SOURCE)")
	fs.StringVar(&s.Only, "only", os.Getenv("BENCH_ONLY"), "comma-separated scenario ids to run; empty runs all (env BENCH_ONLY)")
	fs.StringVar(&s.Tollgate, "tollgate", "bin/tollgate", "tollgate binary (make build)")
	fs.StringVar(&s.Out, "out", "bench/results", "directory of the Markdown and JSON results")
	fs.BoolVar(&s.Keep, "keep", false, "keep the temporary directory (configs, logs) for inspection")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if s.Rounds < 1 || s.Connections < 1 || s.Threads < 1 || s.Threads > s.Connections || s.Streams < 1 {
		errs = append(errs, errors.New("-rounds, -connections, -threads and -streams must be at least 1, threads at most connections"))
	}
	if s.Duration < time.Second {
		errs = append(errs, fmt.Errorf("-duration: %s is under wrk's one-second resolution", s.Duration))
	}
	if _, err := parseSizes(s.RegistrySizes); err != nil {
		errs = append(errs, fmt.Errorf("-registry-sizes: %w", err))
	}
	if s.RegistrySource != "dir" && s.RegistrySource != "upstream" {
		errs = append(errs, fmt.Errorf("-registry-source: %q is neither dir nor upstream", s.RegistrySource))
	}
	ids := make(map[string]bool)
	for _, sc := range scenarios(s.Sites) {
		ids[sc.ID] = true
	}
	for _, id := range s.onlyIDs() {
		if !ids[id] {
			errs = append(errs, fmt.Errorf("-only: unknown scenario %q", id))
		}
	}
	return s, errors.Join(errs...)
}

func (s settings) onlyIDs() []string {
	if strings.TrimSpace(s.Only) == "" {
		return nil
	}
	return strings.Split(strings.ReplaceAll(s.Only, " ", ""), ",")
}

// bench is one run: its settings, its processes and its servers.
type bench struct {
	cfg       settings
	cpu       cpuPlan
	ps        *procs
	tools     map[string]string
	tmp       string
	site      siteSpec
	servers   map[string]*server
	gitea     *giteaPages // for the pages scenarios only
	tls       *tlsSpec    // for the HTTPS scenarios only
	startErrs map[string]error
	stderr    io.Writer
	// noFileErr is why RLIMIT_NOFILE could not be raised (raiseNoFile).
	noFileErr error
	// orgFailures are the failed org checks (checkOrgs): any fails the run.
	orgFailures []string
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "peerbench: "+format+"\n", args...)
}

// server returns a started server, or why it is not running.
func (b *bench) server(name string) (*server, error) {
	if s := b.servers[name]; s != nil {
		return s, nil
	}
	if err := b.startErrs[name]; err != nil {
		return nil, fmt.Errorf("not running: %w", err)
	}
	return nil, fmt.Errorf("%s: not started", name)
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseSettings(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "peerbench:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	noFileErr := raiseNoFile() // before any server starts: they inherit it
	b := &bench{noFileErr: noFileErr, cfg: cfg, ps: &procs{}, servers: map[string]*server{}, startErrs: map[string]error{},
		stderr: stderr, cpu: planCPUs(runtime.NumCPU())}
	defer b.ps.stopAll()
	rep, err := b.run(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "peerbench:", err)
		return 1
	}
	printText(stdout, rep)
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "peerbench: interrupted; no results written")
		return 1
	}
	paths, err := writeResults(cfg.Out, rep)
	if err != nil {
		fmt.Fprintln(stderr, "peerbench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nwritten: %s\n", strings.Join(paths, ", "))
	if len(b.orgFailures) > 0 {
		fmt.Fprintf(stderr, "peerbench: FAILED: tollgate throttled or blocked an org, or billed the pages owner elsewhere; the rows measured then are INVALID:\n  %s\n",
			strings.Join(b.orgFailures, "\n  "))
		return 1
	}
	return 0
}

// run prepares the content, the upstream and the servers, then measures
// every selected scenario.
func (b *bench) run(ctx context.Context) (report, error) {
	var err error
	if b.tools, err = checkPeers(); err != nil {
		return report{}, err
	}
	if b.cfg.Tollgate, err = filepath.Abs(b.cfg.Tollgate); err != nil {
		return report{}, err
	}
	if _, err := os.Stat(b.cfg.Tollgate); err != nil {
		return report{}, fmt.Errorf("tollgate binary: %w (run `make build`)", err)
	}
	if b.tmp, err = os.MkdirTemp("", "peerbench-"); err != nil {
		return report{}, err
	}
	if b.cfg.Keep {
		b.logf("keeping %s", b.tmp)
	} else {
		defer os.RemoveAll(b.tmp)
		defer b.ps.stopAll() // before the directory goes
	}
	b.site.Dir = filepath.Join(b.tmp, "site")
	if err := writeSite(b.site.Dir); err != nil {
		return report{}, err
	}
	rep := report{Date: time.Now(), Machine: describeMachine(b.cfg.Tollgate, b.tools, b.cpu), Settings: b.cfg}
	b.logf("%s", b.cpu.Description)

	var selected []scenario
	only := b.cfg.onlyIDs()
	need := map[string]bool{}
	for _, sc := range scenarios(b.cfg.Sites) {
		if len(only) == 0 || slices.Contains(only, sc.ID) {
			selected = append(selected, sc)
			for _, name := range sc.Servers {
				need[name] = true
			}
		}
	}
	// Every server is configured with the proxied site, so any server needs
	// the upstream.
	if len(need) > 0 || slices.ContainsFunc(selected, func(sc scenario) bool { return sc.Memory || sc.Registry }) {
		if b.site.Upstream, err = startUpstream(ctx, b.ps, b.cpu, b.tmp); err != nil {
			return report{}, fmt.Errorf("upstream: %w", err)
		}
	}
	if need[srvPages] || need[srvGiteaRaw] {
		b.startPages(ctx)
		defer b.gitea.Stop() // before the directory goes
	}
	if need[srvTollgateTLS] {
		// The CA and the peers' certificate come first: nginx and Caddy
		// start with the certificate files in their configs. Without them
		// the peers start plain only and the HTTPS rows say why.
		if b.tls, err = startTLS(ctx, filepath.Join(b.tmp, "tls")); err != nil {
			b.startErrs[srvTollgateTLS] = fmt.Errorf("test CA: %w", err)
			b.logf("HTTPS scenarios: %v", err)
		} else {
			defer b.tls.Close()
			b.site.TLS = b.tls
			b.logf("test CA at %s; certificate for %s written for nginx and Caddy", b.tls.CA.DirectoryURL, hostTLS)
		}
	}
	b.startServers(ctx, need)

	for _, sc := range selected {
		if ctx.Err() != nil {
			return rep, nil
		}
		rep.Scenarios = append(rep.Scenarios, b.runScenario(ctx, sc))
	}
	rep.Targets = evaluateTargets(rep.Scenarios)
	return rep, nil
}

// runScenario runs one scenario the way its kind is measured.
func (b *bench) runScenario(ctx context.Context, sc scenario) scenarioResult {
	switch {
	case sc.NotBuilt != "":
		return scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusNotBuilt, Note: sc.NotBuilt + " not built yet"}
	case sc.Memory:
		return b.runMemory(ctx, sc)
	case sc.ColdMiss:
		return b.runColdMiss(ctx, sc)
	case sc.Idle:
		return b.runIdle(ctx, sc)
	case sc.Cluster:
		return b.runRegistryCluster(ctx, sc)
	case sc.Registry:
		return b.runRegistry(ctx, sc)
	default:
		return b.runThroughput(ctx, sc)
	}
}

// startServers starts each needed server once; the scenarios share them.
// One that fails is reported in its rows, and the others still run.
func (b *bench) startServers(ctx context.Context, need map[string]bool) {
	starts := []struct {
		name  string
		start func(dir string) (*server, error)
	}{
		{srvTollgate, func(dir string) (*server, error) {
			return startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, srvTollgate, dir, b.site, tollgateOptions{})
		}},
		{srvMeterOff, func(dir string) (*server, error) {
			return startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, srvMeterOff, dir, b.site, tollgateOptions{MeterOff: true})
		}},
		{srvTollgateTLS, func(dir string) (*server, error) {
			if b.tls == nil {
				return nil, b.startErrs[srvTollgateTLS]
			}
			t0 := time.Now()
			srv, err := startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, srvTollgateTLS, dir, b.site, tollgateOptions{TLS: b.tls})
			if err == nil {
				b.logf("%s: started, and obtained its certificate for %s on demand, in %s", srvTollgateTLS, hostTLS,
					time.Since(t0).Round(time.Millisecond))
			}
			return srv, err
		}},
		{srvPages, func(dir string) (*server, error) {
			if b.gitea == nil {
				return nil, fmt.Errorf("%w: %v", errNoGitea, b.startErrs[srvGiteaRaw])
			}
			return startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, srvPages, dir, b.site, tollgateOptions{Pages: b.gitea})
		}},
		{srvNginx, func(dir string) (*server, error) {
			return startNginx(ctx, b.ps, b.cpu, b.tools["nginx"], srvNginx, dir, b.site)
		}},
		{srvCaddy, func(dir string) (*server, error) {
			return startCaddy(ctx, b.ps, b.cpu, b.tools["caddy"], srvCaddy, dir, b.site)
		}},
		{srvFloor, func(dir string) (*server, error) {
			return startFloor(ctx, b.ps, b.cpu, srvFloor, dir, b.site)
		}},
	}
	for _, s := range starts {
		if !need[s.name] {
			continue
		}
		dir := filepath.Join(b.tmp, s.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.startErrs[s.name] = err
			continue
		}
		srv, err := s.start(dir)
		if err != nil {
			b.startErrs[s.name] = err
			b.logf("%s failed to start: %v", s.name, err)
			continue
		}
		b.servers[s.name] = srv
		b.logf("%s ready on %s (pid %d)", s.name, srv.Addr, srv.proc.pid())
	}
}
