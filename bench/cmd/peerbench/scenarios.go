package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Server names, in table order. The first server of a scenario is the base
// its ratios are computed for.
const (
	srvTollgate = "tollgate"
	srvMeterOff = "tollgate-meter-off"
	srvNginx    = "nginx"
	srvCaddy    = "caddy"
)

// request is what wrk sends in a scenario and what a correct answer is; the
// answer is checked once with Go before wrk runs, so that a misrouted 404 or a
// compressed body never passes for a fast server.
type request struct {
	Path, Host string
	// Proto is "h2" or "http/1.1" for a request over HTTPS (to hostTLS on
	// the server's TLSAddr); "" for plain HTTP.
	Proto      string
	Headers    []string // "Name: value", besides Host
	WantStatus int
	WantBytes  int
}

// loadKind is the load generator of a scenario.
type loadKind int

const (
	loadWrk        loadKind = iota // wrk: plain HTTP/1.1 keep-alive
	loadH1                         // h2load --h1: HTTPS, HTTP/1.1 keep-alive
	loadH2                         // h2load: HTTPS, h2, -streams per connection
	loadHandshakes                 // peerbench handshake-client: a new connection each
)

// alpn is the application protocol a TLS load must negotiate.
func (k loadKind) alpn() string {
	if k == loadH2 {
		return "h2"
	}
	return "http/1.1"
}

// scenario is one group of rows of the table.
type scenario struct {
	ID, Title string
	// Load is the load generator; the zero value is wrk.
	Load loadKind
	// NotBuilt names the missing feature; such a scenario is reported, not run.
	NotBuilt string
	// Servers run once each per round, in this order.
	Servers []string
	// Request builds the request for one server; it may ask the server first
	// (for its ETag).
	Request func(ctx context.Context, s *server) (request, error)
	// Memory marks the RSS scenarios, which run their own servers.
	Memory bool
	// Certs: every extra site of the memory scenario also has a
	// certificate, served over HTTPS (see runMemoryCerts).
	Certs bool
	// ColdMiss marks the pages-miss scenario: sequential first-time
	// requests timed one by one instead of wrk (see runColdMiss).
	ColdMiss bool
	// Idle marks the idle-connection scenarios (see runIdle); Load is loadH1
	// for the HTTPS one.
	Idle bool
	// Registry marks registry-scale, which runs its own tollgates (see
	// runRegistry); with Cluster, registry-cluster (runRegistryCluster).
	Registry, Cluster bool
}

var (
	allServers = []string{srvTollgate, srvNginx, srvCaddy}
	// floorServers adds the floor (floor.go) to the rows whose gap to
	// nginx it explains.
	floorServers = []string{srvTollgate, srvNginx, srvCaddy, srvFloor}
	pagesServers = []string{srvPages, srvGiteaRaw}
)

func staticFile(name string, size int) func(context.Context, *server) (request, error) {
	return func(context.Context, *server) (request, error) {
		return request{Path: "/" + name, Host: hostStatic, WantStatus: http.StatusOK, WantBytes: size}, nil
	}
}

// revalidate asks each server for its own ETag of the 4 KiB file, then
// revalidates with it: every answer must be 304.
func revalidate(ctx context.Context, s *server) (request, error) {
	status, _, h, err := fetch(ctx, s, request{Path: "/4k.txt", Host: hostStatic})
	if err != nil {
		return request{}, err
	}
	etag := h.Get("ETag")
	if status != http.StatusOK || etag == "" {
		return request{}, fmt.Errorf("GET /4k.txt: status %d, ETag %q: no ETag to revalidate with", status, etag)
	}
	return request{Path: "/4k.txt", Host: hostStatic, Headers: []string{"If-None-Match: " + etag},
		WantStatus: http.StatusNotModified}, nil
}

// tlsFile is GET /name of hostTLS over HTTPS with ALPN proto.
func tlsFile(name string, size int, proto string) func(context.Context, *server) (request, error) {
	return func(_ context.Context, s *server) (request, error) {
		if s.TLSAddr == "" {
			return request{}, fmt.Errorf("%s has no HTTPS listener (see the CA's or tollgate-tls's error)", s.Name)
		}
		return request{Path: "/" + name, Host: hostTLS, Proto: proto, WantStatus: http.StatusOK, WantBytes: size}, nil
	}
}

func proxied(context.Context, *server) (request, error) {
	return request{Path: "/", Host: hostProxied, WantStatus: http.StatusOK, WantBytes: upstreamBodySize}, nil
}

// scenarios lists every scenario of the issue, built or not, in table order.
func scenarios(sites int) []scenario {
	return []scenario{
		{ID: "static-4k", Title: "static 4 KiB, HTTP/1.1 keep-alive", Servers: floorServers, Request: staticFile("4k.txt", 4<<10)},
		{ID: "static-1m", Title: "static 1 MiB, HTTP/1.1 keep-alive", Servers: allServers, Request: staticFile("1m.txt", 1<<20)},
		{ID: "revalidate-304", Title: "304 revalidation (If-None-Match, own ETag)", Servers: floorServers, Request: revalidate},
		{ID: "proxy", Title: "reverse proxy, 1 KiB upstream answer", Servers: floorServers, Request: proxied},
		{ID: "metering", Title: "metering on vs off (static 4 KiB)", Servers: []string{srvTollgate, srvMeterOff},
			Request: staticFile("4k.txt", 4<<10)},
		{ID: "https-h1", Title: "HTTPS static 4 KiB, HTTP/1.1 keep-alive (h2load --h1)", Servers: tlsServers, Load: loadH1,
			Request: tlsFile("4k.txt", 4<<10, "http/1.1")},
		{ID: "https-h2", Title: "HTTPS static 4 KiB, HTTP/2 keep-alive (h2load)", Servers: tlsServers, Load: loadH2,
			Request: tlsFile("4k.txt", 4<<10, "h2")},
		{ID: "tls-handshakes", Title: "full TLS handshakes/s (new connection + GET /index.html each)", Servers: tlsServers,
			Load: loadHandshakes, Request: tlsFile("index.html", len(indexHTML), "http/1.1")},
		{ID: "pages-hit", Title: "Gitea pages, cache hit (vs Gitea raw)", Servers: pagesServers, Request: pagesFile("index.html")},
		{ID: "pages-miss", Title: "Gitea pages, cold miss (vs Gitea raw)", Servers: pagesServers, ColdMiss: true},
		{ID: "memory-sites", Title: fmt.Sprintf("memory (RSS), %s sites with a domain each", groupThousands(int64(sites))), Memory: true},
		{ID: "idle-conns", Title: "memory per idle keep-alive connection, HTTP/1.1", Servers: allServers, Idle: true},
		{ID: "idle-conns-tls", Title: "memory per idle keep-alive connection, HTTPS HTTP/1.1", Servers: tlsServers, Load: loadH1, Idle: true},
		{ID: "memory-certs", Title: fmt.Sprintf("memory (RSS), %s cached certificates", groupThousands(int64(sites))), Memory: true, Certs: true},
		{ID: "registry-scale", Title: "site registry at scale (bulk import, single writes, RSS, restart)", Registry: true},
		{ID: "registry-cluster", Title: "site registry of two nodes on Redis (bulk import, follower start, propagation of writes)",
			Registry: true, Cluster: true},
	}
}

// fetch sends r once with Go's client (no Accept-Encoding) and reads the body.
func fetch(ctx context.Context, s *server, r request) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url(r.Path), nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Host = r.Host
	for _, h := range r.Headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, resp.Header, err
}

// check sends r once and compares the answer with what r wants.
func check(ctx context.Context, s *server, r request) error {
	if r.Proto != "" {
		return checkTLS(ctx, s, r)
	}
	status, body, _, err := fetch(ctx, s, r)
	switch {
	case err != nil:
		return err
	case status != r.WantStatus:
		return fmt.Errorf("GET %s (Host %s): status %d, want %d", r.Path, r.Host, status, r.WantStatus)
	case len(body) != r.WantBytes:
		return fmt.Errorf("GET %s (Host %s): %d body bytes, want %d", r.Path, r.Host, len(body), r.WantBytes)
	}
	return nil
}

// runThroughput measures a scenario: a check and a warm-up per server, then
// rounds of one load run per server in turn (A/B/A/B...).
func (b *bench) runThroughput(ctx context.Context, sc scenario) scenarioResult {
	res := scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusMeasured, Base: sc.Servers[0]}
	rows := make([]serverResult, len(sc.Servers))
	loads := make([]runner, len(sc.Servers))
	for i, name := range sc.Servers {
		rows[i].Server = name
		srv, err := b.server(name)
		if err == nil {
			var r request
			if r, err = sc.Request(ctx, srv); err == nil {
				err = check(ctx, srv, r)
			}
			if err == nil {
				loads[i], err = b.load(sc, srv, r)
				loads[i] = b.withOrgCheck(srv, loads[i]) // a throttled org fails the run
			}
		}
		if err != nil {
			loads[i] = nil
			rows[i].Problems = append(rows[i].Problems, err.Error())
			b.logf("%s %s: %v", sc.ID, name, err)
		}
	}
	for i, l := range loads {
		if l == nil || b.cfg.Warmup <= 0 {
			continue
		}
		if _, err := l(ctx, b.cfg.Warmup); err != nil {
			rows[i].Problems = append(rows[i].Problems, "warm-up: "+err.Error())
		}
	}
	perRound := make([][]float64, len(sc.Servers)) // req/s per round, NaN when unusable
	for round := 1; round <= b.cfg.Rounds && ctx.Err() == nil; round++ {
		for i, l := range loads {
			if l == nil {
				perRound[i] = append(perRound[i], math.NaN())
				continue
			}
			r, err := l(ctx, b.cfg.Duration)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				rows[i].Problems = append(rows[i].Problems, fmt.Sprintf("round %d: %v", round, err))
				perRound[i] = append(perRound[i], math.NaN())
				continue
			}
			problems := r.problems()
			if sc.Load != loadWrk {
				problems = append(problems, tlsProblems(r, sc.Load.alpn())...)
			}
			for _, p := range problems {
				rows[i].Problems = append(rows[i].Problems, fmt.Sprintf("round %d: %s", round, p))
			}
			rows[i].Runs = append(rows[i].Runs, r)
			perRound[i] = append(perRound[i], r.ReqPerSec)
			b.logf("%-14s round %d/%d  %-18s %8.0f req/s  p99 %-8s server core %s", sc.ID, round, b.cfg.Rounds,
				sc.Servers[i], r.ReqPerSec, fmtLatency(r.P99), fmtBusy(r.ServerCPU, r.Wall))
		}
	}
	for i := range rows {
		summarize(&rows[i], perRound[0], perRound[i], i == 0)
	}
	res.Servers = rows
	switch {
	case sc.Load != loadWrk:
		res.Note = b.tlsNote(sc, rows)
	case slices.Contains(sc.Servers, srvFloor):
		res.Note = floorNote(rows)
	}
	if ctx.Err() != nil {
		res.Status, res.Note = statusFailed, "interrupted"
	}
	return res
}

// summarize fills the medians and base ÷ this server's ratio of a row.
func summarize(row *serverResult, base, own []float64, isBase bool) {
	var rps, p99, busy, perReq []float64
	for _, r := range row.Runs {
		rps = append(rps, r.ReqPerSec)
		p99 = append(p99, float64(r.P99))
		if r.Wall > 0 && r.Requests > 0 {
			busy = append(busy, float64(r.ServerCPU)/float64(r.Wall))
			perReq = append(perReq, float64(r.ServerCPU)/float64(r.Requests))
		}
	}
	if len(busy) > 0 {
		row.ServerBusy = median(busy)
		row.CPUPerRequest = time.Duration(median(perReq))
	}
	row.Valid = len(row.Runs) > 0 && len(row.Problems) == 0
	if len(rps) > 0 {
		row.ReqPerSec = median(rps)
		row.P99 = time.Duration(median(p99))
	}
	if !isBase {
		row.BaseRatios = pairedRatios(base, own)
		if r := median(row.BaseRatios); !math.IsNaN(r) {
			row.BaseRatio = &r
		}
	}
}

// runner runs one load of length d against one server.
type runner func(ctx context.Context, d time.Duration) (runResult, error)

// load is the runner of scenario sc's request r against s, pinned on the
// load core: wrk, h2load or the handshake client. Each run also measures the
// server's CPU time, when peerbench started the server.
func (b *bench) load(sc scenario, s *server, r request) (runner, error) {
	var run runner
	switch sc.Load {
	case loadWrk:
		run = func(ctx context.Context, d time.Duration) (runResult, error) {
			return runWrk(ctx, b.cpu.Load, wrkLoad{URL: s.url(r.Path), Headers: append([]string{"Host: " + r.Host}, r.Headers...),
				Duration: d, Connections: b.cfg.Connections, Threads: b.cfg.Threads})
		}
	case loadH1, loadH2:
		_, port, _ := net.SplitHostPort(s.TLSAddr)
		logFile := filepath.Join(b.tmp, sc.ID+"-"+s.Name+".h2load.tsv")
		run = func(ctx context.Context, d time.Duration) (runResult, error) {
			return runH2load(ctx, b.cpu.Load, h2loadLoad{URL: "https://" + hostTLS + ":" + port + r.Path,
				ConnectTo: s.TLSAddr, H1: sc.Load == loadH1, Streams: b.cfg.Streams, Duration: d,
				Connections: b.cfg.Connections, Threads: b.cfg.Threads, LogFile: logFile})
		}
	case loadHandshakes:
		leafFile := filepath.Join(b.tmp, s.Name+"-leaf.der")
		if err := os.WriteFile(leafFile, s.leaf, 0o644); err != nil {
			return nil, err
		}
		run = func(ctx context.Context, d time.Duration) (runResult, error) {
			return runHandshakes(ctx, b.cpu.Load, handshakeLoad{Addr: s.TLSAddr, Path: r.Path, LeafFile: leafFile,
				Workers: b.cfg.Connections, Duration: d})
		}
	default:
		return nil, fmt.Errorf("scenario %s: unknown load kind %d", sc.ID, sc.Load)
	}
	if s.proc == nil {
		return run, nil
	}
	pid := s.proc.pid()
	return func(ctx context.Context, d time.Duration) (runResult, error) {
		cpu0, err0 := cpuTime(pid)
		t0 := time.Now()
		r, err := run(ctx, d)
		wall := time.Since(t0)
		cpu1, err1 := cpuTime(pid)
		if err == nil && err0 == nil && err1 == nil {
			r.ServerCPU, r.Wall = cpu1-cpu0, wall
		}
		return r, err
	}, nil
}

// cpuNote says, per server, its CPU time per unit (request, handshake)
// and how busy its core was, medians over the rounds, with tollgate ÷ it
// per CPU second.
func cpuNote(unit string, rows []serverResult) string {
	var parts []string
	for i, row := range rows {
		if row.CPUPerRequest == 0 {
			continue
		}
		cpu := fmtLatency(row.CPUPerRequest)
		if row.CPUPerRequest < 100*time.Microsecond {
			cpu = fmt.Sprintf("%.1fµs", float64(row.CPUPerRequest)/float64(time.Microsecond))
		}
		part := fmt.Sprintf("%s %s, core %.0f %%", row.Server, cpu, 100*row.ServerBusy)
		if i > 0 && rows[0].CPUPerRequest > 0 {
			part += fmt.Sprintf(" (tollgate ÷ it per CPU second %.2f×)", float64(row.CPUPerRequest)/float64(rows[0].CPUPerRequest))
		}
		parts = append(parts, part)
	}
	return "server CPU per " + unit + ": " + strings.Join(parts, "; ")
}

// floorNote is the CPU note of a plain HTTP/1.1 scenario with the floor
// (floor.go), and the floor's own ratios to nginx: the most a server built
// on fasthttp reaches in this row.
func floorNote(rows []serverResult) string {
	note := cpuNote("request", rows)
	var nginx, floor *serverResult
	for i := range rows {
		switch rows[i].Server {
		case srvNginx:
			nginx = &rows[i]
		case srvFloor:
			floor = &rows[i]
		}
	}
	if nginx == nil || floor == nil || nginx.BaseRatio == nil || floor.BaseRatio == nil || *floor.BaseRatio == 0 {
		return note
	}
	// Both ratios are tollgate ÷ server per round's median; their quotient
	// is floor ÷ nginx.
	note += fmt.Sprintf("; %s ÷ nginx: %.2f× req/s", srvFloor, *nginx.BaseRatio / *floor.BaseRatio)
	if nginx.CPUPerRequest > 0 && floor.CPUPerRequest > 0 {
		note += fmt.Sprintf(", %.2f× per CPU second", float64(nginx.CPUPerRequest)/float64(floor.CPUPerRequest))
	}
	return note
}

// tlsNote says how busy each server's core was and how much CPU a request
// (a handshake) cost it, medians over the rounds: a server well below 100 %
// was held back by the load generator, not by itself, and then requests per
// CPU second are the fairer comparison; their ratio is given like the
// table's (above 1: tollgate does more with a CPU second).
func (b *bench) tlsNote(sc scenario, rows []serverResult) string {
	unit := "request"
	if sc.Load == loadHandshakes {
		unit = "handshake"
	}
	note := cpuNote(unit, rows)
	switch sc.Load {
	case loadH1:
		note = fmt.Sprintf("h2load --h1 -c%d -t%d; ", b.cfg.Connections, b.cfg.Threads) + note
	case loadH2:
		note = fmt.Sprintf("h2load -c%d -t%d -m%d (streams per connection); ", b.cfg.Connections, b.cfg.Threads, b.cfg.Streams) + note
	case loadHandshakes:
		note = fmt.Sprintf("%d concurrent clients, X25519, no resumption; ", b.cfg.Connections) + note
	}
	return note
}
