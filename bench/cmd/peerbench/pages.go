package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/internal/giteatest"
)

// The Gitea pages scenarios: tollgate serving alice.pages.bench from the
// alice/pages repository of a real Gitea, against Gitea's own raw endpoint.
const (
	srvPages    = "tollgate-pages"
	srvGiteaRaw = "gitea-raw"

	pagesDomain = "pages.bench"
	pagesOwner  = "alice"
	pagesRepo   = "pages"
	pagesBranch = "main" // no "pages" branch: tollgate serves the default branch
	pagesHost   = pagesOwner + "." + pagesDomain
	pagesSize   = 4 << 10 // index.html and every f<i>.html

	// missFiles is how many never-requested files the cold-miss scenario
	// fetches, one after another, from each side.
	missFiles = 50
	// giteaRawTimeout bounds the wait for a fresh commit on the raw endpoint
	// (about two seconds on a fresh repository).
	giteaRawTimeout = 30 * time.Second
)

// giteaPages is the running Gitea with the alice/pages repository.
type giteaPages struct {
	URL, Token string
	Addr       string
	srv        *giteatest.Server
}

// startGitea starts Gitea under dir (the binary of `make gitea`), pins it to
// the upstream's core, creates alice/pages with index.html and the cold-miss
// files in one commit, and waits until the raw endpoint serves the last one.
// On error nothing is left running.
func startGitea(ctx context.Context, cpu cpuPlan, dir string) (*giteaPages, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s, err := giteatest.New(dir)
	if err != nil {
		return nil, err
	}
	g := &giteaPages{URL: s.URL(), Token: s.Token(), Addr: s.Addr(), srv: s}
	if err := g.setUp(ctx, cpu, dir); err != nil {
		s.Stop()
		return nil, err
	}
	return g, nil
}

func (g *giteaPages) setUp(ctx context.Context, cpu cpuPlan, dir string) error {
	// Pinned before any API call, so the git processes it spawns inherit it.
	if err := pinGitea(cpu, filepath.Join(dir, "custom", "conf", "app.ini")); err != nil {
		return err
	}
	if err := g.call(ctx, http.MethodPost, "/admin/users", map[string]any{
		"username": pagesOwner, "email": pagesOwner + "@example.com", "password": randomToken(),
		"must_change_password": false,
	}); err != nil {
		return err
	}
	if err := g.call(ctx, http.MethodPost, "/admin/users/"+pagesOwner+"/repos", map[string]any{
		"name": pagesRepo, "auto_init": true, "default_branch": pagesBranch, "private": false,
	}); err != nil {
		return err
	}
	// One commit with every file: tollgate learns the branch head once, at
	// its first request, and each f<i>.html is then a miss of its own.
	files := []map[string]string{{"operation": "create", "path": "index.html",
		"content": base64.StdEncoding.EncodeToString(pageBody("index.html"))}}
	for i := range missFiles {
		name := missFile(i)
		files = append(files, map[string]string{"operation": "create", "path": name,
			"content": base64.StdEncoding.EncodeToString(pageBody(name))})
	}
	if err := g.call(ctx, http.MethodPost, "/repos/"+pagesOwner+"/"+pagesRepo+"/contents", map[string]any{
		"branch": pagesBranch, "message": "peerbench pages", "files": files,
	}); err != nil {
		return err
	}
	return g.waitRaw(ctx, missFile(missFiles-1))
}

// Stop stops Gitea; safe on nil.
func (g *giteaPages) Stop() {
	if g != nil {
		g.srv.Stop()
	}
}

// rawPath is the raw endpoint's path for a file of alice/pages on main.
func rawPath(file string) string {
	return "/api/v1/repos/" + pagesOwner + "/" + pagesRepo + "/raw/" + file + "?ref=" + pagesBranch
}

func missFile(i int) string { return fmt.Sprintf("f%d.html", i) }

// pageBody is a distinct HTML page of exactly pagesSize bytes.
func pageBody(name string) []byte {
	head := fmt.Sprintf("<!doctype html><title>%s</title><p>peerbench page %s</p>\n<!--", name, name)
	tail := "-->\n"
	return []byte(head + strings.Repeat("x", pagesSize-len(head)-len(tail)) + tail)
}

// call sends body as JSON to Gitea's /api/v1+path as the admin; any non-2xx
// answer is an error that carries Gitea's message.
func (g *giteaPages) call(ctx context.Context, method, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, g.URL+"/api/v1"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+g.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("gitea: %s /api/v1%s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// waitRaw polls the raw endpoint for file until it answers 200.
func (g *giteaPages) waitRaw(ctx context.Context, file string) error {
	srv := &server{Name: srvGiteaRaw, Addr: g.Addr, gitea: g}
	r := g.rawRequest(file)
	deadline := time.Now().Add(giteaRawTimeout)
	for {
		status, _, _, err := fetch(ctx, srv, r)
		if err == nil && status == http.StatusOK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gitea: %s not served after %s: %w", rawPath(file), giteaRawTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (g *giteaPages) rawRequest(file string) request {
	return request{Path: rawPath(file), Host: g.Addr, Headers: []string{"Authorization: token " + g.Token},
		WantStatus: http.StatusOK, WantBytes: pagesSize}
}

// pinGitea pins every thread of `gitea web --config conf` to the upstream's
// cores (giteatest starts it, so it cannot be started under taskset).
func pinGitea(cpu cpuPlan, conf string) error {
	if len(cpu.Upstream) == 0 {
		return nil
	}
	pid, err := pidOf("web", conf)
	if err != nil {
		return fmt.Errorf("pinning gitea: %w", err)
	}
	cpus := cpu.Upstream[len(cpu.Upstream)-1]
	if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("pinning gitea: taskset: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// pidOf finds the process whose command line holds every one of args.
func pidOf(args ...string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(string(b), "\x00")
		if !slices.ContainsFunc(args, func(a string) bool { return !slices.Contains(argv, a) }) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process with arguments %q", args)
}

// pagesFile is the request for file: through tollgate as alice.pages.bench,
// or from Gitea's raw endpoint with the admin token.
func pagesFile(file string) func(context.Context, *server) (request, error) {
	return func(_ context.Context, s *server) (request, error) {
		if s.gitea != nil {
			return s.gitea.rawRequest(file), nil
		}
		return request{Path: "/" + file, Host: pagesHost, WantStatus: http.StatusOK, WantBytes: pagesSize}, nil
	}
}

// startPages starts Gitea and registers gitea-raw as a server; the
// tollgate-pages instance is started with the others (startServers).
func (b *bench) startPages(ctx context.Context) {
	g, err := startGitea(ctx, b.cpu, filepath.Join(b.tmp, "gitea"))
	if err != nil {
		b.startErrs[srvGiteaRaw] = err
		b.logf("gitea failed to start: %v", err)
		return
	}
	b.gitea = g
	b.servers[srvGiteaRaw] = &server{Name: srvGiteaRaw, Addr: g.Addr, gitea: g}
	b.logf("gitea %s ready on %s with %s/%s (%d files)", giteatest.Version, g.Addr, pagesOwner, pagesRepo, missFiles+1)
}

// latencyResult is the cold-miss figure of one server: sequential requests,
// each for a file it has not been asked for before.
type latencyResult struct {
	Samples int           `json:"samples"`
	Median  time.Duration `json:"median_ns"`
	P90     time.Duration `json:"p90_ns"`
}

// runColdMiss measures the pages-miss scenario. wrk repeats one URL, so it
// cannot produce misses: instead each server gets one warm-up GET of
// index.html (tollgate learns the branch head, both open their keep-alive
// connection), then missFiles sequential GETs of f0.html... each requested
// once. The servers run one after another, tollgate first.
func (b *bench) runColdMiss(ctx context.Context, sc scenario) scenarioResult {
	res := scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusMeasured, Base: sc.Servers[0]}
	res.Servers = make([]serverResult, len(sc.Servers))
	for i, name := range sc.Servers {
		row := &res.Servers[i]
		row.Server = name
		lat, problems := b.coldMisses(ctx, name)
		if srv, err := b.server(name); err == nil && srv.admin != nil && ctx.Err() == nil {
			if err := b.checkOrgs(ctx, srv); err != nil {
				problems = append(problems, err.Error())
			}
		}
		row.Problems = problems
		if lat.Samples > 0 {
			row.Latency = &lat
			row.ReqPerSec = 1 / lat.Median.Seconds()
			row.P99 = lat.P90
			b.logf("%-14s %-18s %d misses  median %s  p90 %s", sc.ID, name, lat.Samples, fmtLatency(lat.Median), fmtLatency(lat.P90))
		}
		row.Valid = lat.Samples == missFiles && len(problems) == 0
	}
	base := res.Servers[0]
	for i := 1; i < len(res.Servers); i++ {
		row := &res.Servers[i]
		if base.Latency == nil || row.Latency == nil {
			continue
		}
		r := base.ReqPerSec / row.ReqPerSec
		row.BaseRatios, row.BaseRatio = []float64{r}, &r
		res.Note = fmt.Sprintf("%d sequential GETs of new files each; req/s = 1 ÷ median, p99 column = p90; added by tollgate: median %s, p90 %s",
			missFiles, fmtSigned(base.Latency.Median-row.Latency.Median), fmtSigned(base.Latency.P90-row.Latency.P90))
	}
	if ctx.Err() != nil {
		res.Status, res.Note = statusFailed, "interrupted"
	}
	return res
}

// coldMisses times missFiles first-time GETs against one server.
func (b *bench) coldMisses(ctx context.Context, name string) (latencyResult, []string) {
	srv, err := b.server(name)
	if err == nil {
		err = check(ctx, srv, mustRequest(ctx, srv, "index.html"))
	}
	if err != nil {
		b.logf("pages-miss %s: %v", name, err)
		return latencyResult{}, []string{err.Error()}
	}
	var problems []string
	var ds []float64
	for i := range missFiles {
		r := mustRequest(ctx, srv, missFile(i))
		start := time.Now()
		status, body, _, err := fetch(ctx, srv, r)
		d := time.Since(start)
		switch {
		case ctx.Err() != nil:
			return latencyResult{}, append(problems, "interrupted")
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", r.Path, err))
		case status != r.WantStatus || len(body) != r.WantBytes:
			problems = append(problems, fmt.Sprintf("%s: status %d, %d bytes; want %d, %d", r.Path, status, len(body), r.WantStatus, r.WantBytes))
		default:
			ds = append(ds, float64(d))
		}
	}
	if len(ds) == 0 {
		return latencyResult{}, append(problems, "no successful request")
	}
	return latencyResult{Samples: len(ds), Median: time.Duration(median(ds)), P90: time.Duration(percentile(ds, 0.9))}, problems
}

// mustRequest is pagesFile's request; it never fails.
func mustRequest(ctx context.Context, s *server, file string) request {
	r, _ := pagesFile(file)(ctx, s)
	return r
}

// percentile is the nearest-rank p-quantile of xs; NaN for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func fmtSigned(d time.Duration) string {
	if d < 0 {
		return "−" + fmtLatency(-d)
	}
	return "+" + fmtLatency(d)
}

var errNoGitea = errors.New("gitea not running")
