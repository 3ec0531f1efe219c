package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
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
	Headers    []string // "Name: value", besides Host
	WantStatus int
	WantBytes  int
}

// scenario is one group of rows of the table.
type scenario struct {
	ID, Title string
	// NotBuilt names the missing feature; such a scenario is reported, not run.
	NotBuilt string
	// Servers run once each per round, in this order.
	Servers []string
	// Request builds the request for one server; it may ask the server first
	// (for its ETag).
	Request func(ctx context.Context, s *server) (request, error)
	// Memory marks the RSS scenario, which runs its own servers.
	Memory bool
	// ColdMiss marks the pages-miss scenario: sequential first-time
	// requests timed one by one instead of wrk (see runColdMiss).
	ColdMiss bool
}

var (
	allServers   = []string{srvTollgate, srvNginx, srvCaddy}
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

func proxied(context.Context, *server) (request, error) {
	return request{Path: "/", Host: hostProxied, WantStatus: http.StatusOK, WantBytes: upstreamBodySize}, nil
}

// scenarios lists every scenario of the issue, built or not, in table order.
func scenarios(sites int) []scenario {
	return []scenario{
		{ID: "static-4k", Title: "static 4 KiB, HTTP/1.1 keep-alive", Servers: allServers, Request: staticFile("4k.txt", 4<<10)},
		{ID: "static-1m", Title: "static 1 MiB, HTTP/1.1 keep-alive", Servers: allServers, Request: staticFile("1m.txt", 1<<20)},
		{ID: "revalidate-304", Title: "304 revalidation (If-None-Match, own ETag)", Servers: allServers, Request: revalidate},
		{ID: "proxy", Title: "reverse proxy, 1 KiB upstream answer", Servers: allServers, Request: proxied},
		{ID: "metering", Title: "metering on vs off (static 4 KiB)", Servers: []string{srvTollgate, srvMeterOff},
			Request: staticFile("4k.txt", 4<<10)},
		{ID: "https-h1", Title: "HTTPS HTTP/1.1 keep-alive", NotBuilt: "TLS termination"},
		{ID: "https-h2", Title: "HTTPS HTTP/2 keep-alive", NotBuilt: "TLS termination"},
		{ID: "tls-handshakes", Title: "full TLS handshakes per second", NotBuilt: "TLS termination"},
		{ID: "pages-hit", Title: "Gitea pages, cache hit (vs Gitea raw)", Servers: pagesServers, Request: pagesFile("index.html")},
		{ID: "pages-miss", Title: "Gitea pages, cold miss (vs Gitea raw)", Servers: pagesServers, ColdMiss: true},
		{ID: "memory-sites", Title: fmt.Sprintf("memory (RSS), %s sites with a domain each", groupThousands(int64(sites))), Memory: true},
		{ID: "memory-certs", Title: fmt.Sprintf("memory (RSS), %s cached certificates", groupThousands(int64(sites))), NotBuilt: "certificate storage"},
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
// rounds of one wrk run per server in turn (A/B/A/B...).
func (b *bench) runThroughput(ctx context.Context, sc scenario) scenarioResult {
	res := scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusMeasured, Base: sc.Servers[0]}
	rows := make([]serverResult, len(sc.Servers))
	loads := make([]*wrkLoad, len(sc.Servers))
	for i, name := range sc.Servers {
		rows[i].Server = name
		srv, err := b.server(name)
		if err == nil {
			var r request
			if r, err = sc.Request(ctx, srv); err == nil {
				err = check(ctx, srv, r)
			}
			loads[i] = b.load(srv, r)
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
		w := *l
		w.Duration = b.cfg.Warmup
		if _, err := runWrk(ctx, b.cpu.Load, w); err != nil {
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
			r, err := runWrk(ctx, b.cpu.Load, *l)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				rows[i].Problems = append(rows[i].Problems, fmt.Sprintf("round %d: %v", round, err))
				perRound[i] = append(perRound[i], math.NaN())
				continue
			}
			for _, p := range r.problems() {
				rows[i].Problems = append(rows[i].Problems, fmt.Sprintf("round %d: %s", round, p))
			}
			rows[i].Runs = append(rows[i].Runs, r)
			perRound[i] = append(perRound[i], r.ReqPerSec)
			b.logf("%-14s round %d/%d  %-18s %8.0f req/s  p99 %s", sc.ID, round, b.cfg.Rounds, sc.Servers[i], r.ReqPerSec, fmtLatency(r.P99))
		}
	}
	for i := range rows {
		summarize(&rows[i], perRound[0], perRound[i], i == 0)
	}
	res.Servers = rows
	if ctx.Err() != nil {
		res.Status, res.Note = statusFailed, "interrupted"
	}
	return res
}

// summarize fills the medians and base ÷ this server's ratio of a row.
func summarize(row *serverResult, base, own []float64, isBase bool) {
	var rps, p99 []float64
	for _, r := range row.Runs {
		rps = append(rps, r.ReqPerSec)
		p99 = append(p99, float64(r.P99))
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

// load is the wrk invocation of request r against s.
func (b *bench) load(s *server, r request) *wrkLoad {
	return &wrkLoad{
		URL:         s.url(r.Path),
		Headers:     append([]string{"Host: " + r.Host}, r.Headers...),
		Duration:    b.cfg.Duration,
		Connections: b.cfg.Connections,
		Threads:     b.cfg.Threads,
	}
}
