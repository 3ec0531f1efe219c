package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/sites"
)

// registry-scale measures how tollgate's site registry scales: for each size
// N, a fresh tollgate gets N orgs, N sites and N domains through the bulk
// import of its admin API, then single writes, routing and a restart on the
// same store are timed. Only tollgate runs: nginx and Caddy have no registry.
const (
	defaultRegistrySizes = "10000,100000,1000000"
	registryDomain       = "scale.bench"
	// registryBatch is the records of one POST /v1/import.
	registryBatch = sites.MaxImportBatch
	// registryWrites single-item writes (POST /v1/orgs) are timed per size:
	// their 99th percentile is the 10th slowest, where of 200 writes it was
	// the 2nd, one stall of the disk's flush (each write syncs twice) away
	// from the slowest.
	registryWrites = 1000
	// registryProbes hosts, spread over the range, get one GET / each.
	registryProbes = 1000
	// registryStartTimeout bounds a start on a store of N sites.
	registryStartTimeout = 5 * time.Minute
	// registrySettleTimeout bounds the wait for tollgate to return an
	// import's memory: a second of quiet, then one full collection.
	registrySettleTimeout = time.Minute
	// registryMaxListed refusals or failed GETs are listed one by one; the
	// rest are counted.
	registryMaxListed = 5
	// registryMaxFiles is how many descriptors tollgate may hold after the
	// GETs: listeners, connections, the store, logs; none per site.
	registryMaxFiles = 4096
)

// registryHost is the domain of site s-i.
func registryHost(i int) string { return "s-" + strconv.Itoa(i) + "." + registryDomain }

// registryResult is tollgate's registry at one size.
type registryResult struct {
	Sites int `json:"sites"`
	// Source is every site's source type: dir or upstream.
	Source string `json:"source"`
	// Records (1 plan + 3 × Sites) went in Batches requests.
	Records int `json:"records"`
	Batches int `json:"batches"`
	// Import is the wall time of the whole import; ImportRequests the part
	// spent in the requests (the rest is peerbench writing the NDJSON).
	Import         time.Duration `json:"import_ns"`
	ImportRequests time.Duration `json:"import_requests_ns"`
	// ImportProgress is the time since the import began at each tenth of
	// the records (and at the end): a batch costing more as the registry
	// grows shows as widening steps.
	ImportProgress    []time.Duration `json:"import_progress_ns"`
	ImportSitesPerSec float64         `json:"import_sites_per_sec"`
	Created           int             `json:"created"`
	Updated           int             `json:"updated"`
	Unchanged         int             `json:"unchanged"`
	Refused           int             `json:"refused"`
	// Writes POST /v1/orgs, one after another after the import.
	Writes   int           `json:"writes"`
	WriteP50 time.Duration `json:"write_p50_ns"`
	WriteP99 time.Duration `json:"write_p99_ns"`
	WriteMax time.Duration `json:"write_max_ns"`
	// BaseRSS: right after start (the two base sites); ImportEndRSS: as
	// the import's last batch is answered; Settle: from then until
	// tollgate returned the burst's memory (waitMemoryReturned);
	// ImportRSS: after that; RSSPerSite: (ImportRSS − BaseRSS) ÷ Sites, an
	// org and a domain each included; PeakRSS: VmHWM after the GETs.
	BaseRSS      int64         `json:"base_rss_bytes"`
	ImportEndRSS int64         `json:"import_end_rss_bytes"`
	Settle       time.Duration `json:"settle_ns"`
	ImportRSS    int64         `json:"import_rss_bytes"`
	RSSPerSite   float64       `json:"rss_per_site_bytes"`
	PeakRSS      int64         `json:"peak_rss_bytes"`
	// ProbedRSS: after the writes and one GET / to each of Probes hosts.
	Probes    int   `json:"probes"`
	ProbedRSS int64 `json:"probed_rss_bytes"`
	// Startup: a new process on the same store, from its start until
	// /readyz and s-0's GET / answer 200; RestartRSS is its RSS then.
	Startup    time.Duration `json:"startup_ns"`
	RestartRSS int64         `json:"restart_rss_bytes"`
	// OpenFiles is the descriptors tollgate held after the GETs: more than
	// registryMaxFiles makes the size INVALID (a site would hold one).
	OpenFiles int      `json:"open_files"`
	Valid     bool     `json:"valid"`
	Problems  []string `json:"problems,omitempty"`
}

func (r *registryResult) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// parseSizes reads "10000,100000": positive counts, at least one.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// registrySource is the JSON of every site's source: the benchmark
// directory, or with kind "upstream" the shared upstream; and the size of
// the answer to GET /.
func registrySource(kind string, s siteSpec) ([]byte, int) {
	src := sites.Source{Type: sites.SourceDir, Path: s.Dir}
	want := len(indexHTML)
	if kind == sites.SourceUpstream {
		src, want = sites.Source{Type: sites.SourceUpstream, URL: "http://" + s.Upstream}, upstreamBodySize
	}
	b, _ := json.Marshal(src) // strings only: it always marshals
	return b, want
}

// registryBatches yields the import of n orgs, sites (with the source
// srcJSON) and domains as NDJSON bodies of at most per records, with the
// count of records of each: the plan first, then per i its org, site and
// domain, in that order, so a record's references are in its batch or an
// earlier one. The body is reused: it is valid until the next iteration.
func registryBatches(n, per int, srcJSON []byte) iter.Seq2[[]byte, int] {
	total := 1 + 3*n
	return func(yield func([]byte, int) bool) {
		var buf []byte
		for start := 0; start < total; start += per {
			end := min(start+per, total)
			buf = buf[:0]
			for rec := start; rec < end; rec++ {
				buf = append(appendRegistryRecord(buf, rec, srcJSON), '\n')
			}
			if !yield(buf, end-start) {
				return
			}
		}
	}
}

// appendRegistryRecord appends record rec of the import: 0 is the plan,
// then org, site and domain of i = (rec-1)/3.
func appendRegistryRecord(buf []byte, rec int, srcJSON []byte) []byte {
	if rec == 0 {
		return append(buf, `{"plan":{"name":"`+benchPlan+`"}}`...)
	}
	i := strconv.Itoa((rec - 1) / 3)
	switch (rec - 1) % 3 {
	case 0:
		return append(buf, `{"org":{"id":"o-`+i+`","plan":"`+benchPlan+`"}}`...)
	case 1:
		buf = append(buf, `{"site":{"id":"s-`+i+`","org":"o-`+i+`","source":`...)
		return append(append(buf, srcJSON...), "}}"...)
	default:
		return append(buf, `{"domain":{"domain":"`+registryHost((rec-1)/3)+`","site":"s-`+i+`"}}`...)
	}
}

// sampleIndices are m indices spread evenly over [0, n), both ends
// included; all of them when n ≤ m.
func sampleIndices(n, m int) []int {
	if n <= m || m < 2 {
		out := make([]int, min(n, max(m, 1)))
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, m)
	for i := range out {
		out[i] = int(int64(i) * int64(n-1) / int64(m-1))
	}
	return out
}

// adminHTTP sends raw requests to tollgate's admin API over one keep-alive
// connection (requests are sequential), with its bearer token.
type adminHTTP struct {
	base, token string
	hc          *http.Client
}

func newAdminHTTP(a *tollgateAdmin) *adminHTTP {
	return &adminHTTP{base: "http://" + a.Addr, token: a.token, hc: &http.Client{Timeout: registryStartTimeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}}
}

// post sends body as contentType and returns the status and answer.
func (c *adminHTTP) post(ctx context.Context, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", contentType)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// runRegistry measures each size of -registry-sizes with a fresh tollgate.
func (b *bench) runRegistry(ctx context.Context, sc scenario) scenarioResult {
	res := scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusMeasured, Base: srvTollgate, Registry: []registryResult{}}
	sizes, _ := parseSizes(b.cfg.RegistrySizes) // checked by parseSettings
	for _, n := range sizes {
		if ctx.Err() != nil {
			break
		}
		r := b.registryAt(ctx, n)
		r.Valid = len(r.Problems) == 0
		res.Registry = append(res.Registry, r)
		b.logf("%s %s sites: import %s (%.0f sites/s), write p50 %s p99 %s, RSS %s as the import ended, %s after it (%.0f B/site), %s after GETs, "+
			"%d open files, start-up %s, RSS %s after restart %v", sc.ID, groupThousands(int64(n)), fmtLatency(r.Import),
			r.ImportSitesPerSec, fmtLatency(r.WriteP50), fmtLatency(r.WriteP99), fmtBytes(r.ImportEndRSS), fmtBytes(r.ImportRSS), r.RSSPerSite,
			fmtBytes(r.ProbedRSS), r.OpenFiles, fmtLatency(r.Startup), fmtBytes(r.RestartRSS), r.Problems)
	}
	if ctx.Err() != nil {
		res.Status, res.Note = statusFailed, "interrupted"
	}
	return res
}

// registryAt measures size n: import, single writes, RSS, GETs, then a
// restart on the same store.
func (b *bench) registryAt(ctx context.Context, n int) registryResult {
	r := registryResult{Sites: n, Source: b.cfg.RegistrySource}
	name := fmt.Sprintf("tollgate-registry-%d", n)
	dir := filepath.Join(b.tmp, name)
	srv, err := startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, name, dir, b.site, tollgateOptions{})
	if err != nil {
		r.problem("start: %v", err)
		return r
	}
	defer srv.proc.stop()
	ac := newAdminHTTP(srv.admin)
	defer ac.hc.CloseIdleConnections()
	r.BaseRSS = registryRSS(&r, srv)
	if err := b.registryImport(ctx, ac, &r); err != nil {
		r.problem("import: %v", err)
		return r
	}
	r.ImportEndRSS = registryRSS(&r, srv)
	if err := waitMemoryReturned(ctx, srv.admin.Addr, &r); err != nil {
		r.problem("%v", err)
	}
	r.ImportRSS = registryRSS(&r, srv)
	if r.ImportRSS > 0 && r.BaseRSS > 0 {
		r.RSSPerSite = float64(r.ImportRSS-r.BaseRSS) / float64(n)
	}
	if err := registryWrite(ctx, ac, &r); err != nil {
		r.problem("single writes: %v", err)
	}
	_, want := registrySource(r.Source, b.site)
	registryProbe(ctx, srv, want, &r)
	r.ProbedRSS = registryRSS(&r, srv)
	if v, err := statusBytes(srv.proc.pid(), "VmHWM"); err == nil {
		r.PeakRSS = v
	}
	if lost := usageLost(srv.admin.Addr); lost != "" {
		r.problem("%s", lost)
	}
	r.OpenFiles = openFiles(srv.proc.pid())
	if r.OpenFiles > registryMaxFiles {
		r.problem("tollgate holds %d descriptors after the GETs, more than %d: something holds one per site", r.OpenFiles, registryMaxFiles)
	}
	if ctx.Err() != nil {
		return r
	}

	srv.proc.stop()
	b.logf("registry-scale %s sites: restarting on the same store", groupThousands(int64(n)))
	t0 := time.Now()
	again, err := startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, name+"-restart", dir, b.site,
		tollgateOptions{Reopen: srv.admin.store, ReadyTimeout: registryStartTimeout})
	if err != nil {
		r.problem("restart: %v", err)
		return r
	}
	defer again.proc.stop()
	if err := waitReady(ctx, again.proc, again.url("/"), registryHost(0), registryStartTimeout); err != nil {
		r.problem("restart: %v", err)
		return r
	}
	r.Startup = time.Since(t0)
	r.RestartRSS = registryRSS(&r, again)
	if err := check(ctx, again, request{Path: "/", Host: registryHost(0), WantStatus: http.StatusOK, WantBytes: want}); err != nil {
		r.problem("after restart: %v", err)
	}
	return r
}

// settleRecords is tollgate's settleAfter (cmd/tollgate/settle.go): an
// import of that many records or more (and of a tenth of the registry) is
// followed by one collection that returns the import's garbage to the OS, a
// second after the last write.
const settleRecords = 10_000

// waitMemoryReturned waits, after an import of settleRecords or more, until
// tollgate has returned the burst's memory (tollgate_memory_returns_total
// at least 1 and tollgate_memory_return_pending 0), and records how long
// that took. The single writes and the RSS after the import are measured
// on the node as it then stays; ImportEndRSS keeps the figure from before.
func waitMemoryReturned(ctx context.Context, adminAddr string, r *registryResult) error {
	if r.Records < settleRecords {
		return nil
	}
	t0 := time.Now()
	for scrapeMetric(adminAddr, "tollgate_memory_returns_total") < 1 || scrapeMetric(adminAddr, "tollgate_memory_return_pending") != 0 {
		if time.Since(t0) > registrySettleTimeout {
			return fmt.Errorf("tollgate did not return the import's memory within %s (tollgate_memory_returns_total, tollgate_memory_return_pending)",
				registrySettleTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	r.Settle = time.Since(t0)
	return nil
}

// registryImport sends the n orgs, sites and domains in batches, one
// request after another, and adds up the answers.
func (b *bench) registryImport(ctx context.Context, ac *adminHTTP, r *registryResult) error {
	total := 1 + 3*r.Sites
	next := total / 10
	t0 := time.Now()
	src, _ := registrySource(r.Source, b.site)
	for body, recs := range registryBatches(r.Sites, registryBatch, src) {
		tr := time.Now()
		status, answer, err := ac.post(ctx, "/v1/import", "application/x-ndjson", body)
		r.ImportRequests += time.Since(tr)
		if err != nil {
			return fmt.Errorf("batch %d: %w", r.Batches+1, err)
		}
		if status != http.StatusOK {
			return fmt.Errorf("batch %d: status %d: %s", r.Batches+1, status, bytes.TrimSpace(answer))
		}
		var sum admin.ImportSummary
		if err := json.Unmarshal(answer, &sum); err != nil {
			return fmt.Errorf("batch %d: decoding %q: %w", r.Batches+1, answer, err)
		}
		r.Created += sum.Created
		r.Updated += sum.Updated
		r.Unchanged += sum.Unchanged
		for _, ref := range sum.Refusals {
			if r.Refused < registryMaxListed {
				r.problem("refused: batch %d line %d %s %q: %d %s", r.Batches+1, ref.Line, ref.Kind, ref.ID, ref.Status, ref.Detail)
			}
			r.Refused++
		}
		r.Batches++
		r.Records += recs
		if r.Records >= next || r.Records == total {
			r.ImportProgress = append(r.ImportProgress, time.Since(t0))
			b.logf("registry-scale %s sites: %s/%s records imported in %s", groupThousands(int64(r.Sites)),
				groupThousands(int64(r.Records)), groupThousands(int64(total)), time.Since(t0).Round(time.Millisecond))
			next += total / 10
		}
	}
	r.Import = time.Since(t0)
	r.ImportSitesPerSec = float64(r.Sites) / r.Import.Seconds()
	if r.Refused > 0 {
		r.problem("%s of %s records refused in all", groupThousands(int64(r.Refused)), groupThousands(int64(total)))
	}
	return ctx.Err()
}

// registryWrite times registryWrites new orgs through POST /v1/orgs.
func registryWrite(ctx context.Context, ac *adminHTTP, r *registryResult) error {
	lat := make([]float64, 0, registryWrites)
	defer func() {
		r.Writes = len(lat)
		if len(lat) > 0 {
			r.WriteP50, r.WriteP99 = time.Duration(percentile(lat, 0.5)), time.Duration(percentile(lat, 0.99))
			r.WriteMax = time.Duration(slices.Max(lat))
		}
	}()
	for j := range registryWrites {
		body := fmt.Sprintf(`{"id":"w-%d","plan":%q}`, j, benchPlan)
		t0 := time.Now()
		status, answer, err := ac.post(ctx, "/v1/orgs", "application/json", []byte(body))
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("org w-%d: %w", j, err)
		}
		if status != http.StatusCreated {
			return fmt.Errorf("org w-%d: status %d, want 201: %s", j, status, bytes.TrimSpace(answer))
		}
		lat = append(lat, float64(d))
	}
	return nil
}

// registryProbe sends GET / to registryProbes hosts spread over the range;
// each must answer 200 with want bytes (index.html, or the upstream's answer).
func registryProbe(ctx context.Context, srv *server, want int, r *registryResult) {
	failed := 0
	for _, k := range sampleIndices(r.Sites, registryProbes) {
		err := check(ctx, srv, request{Path: "/", Host: registryHost(k), WantStatus: http.StatusOK, WantBytes: want})
		if ctx.Err() != nil {
			return
		}
		r.Probes++
		if err != nil {
			if failed < registryMaxListed {
				r.problem("GET / as %s: %v", registryHost(k), err)
			}
			failed++
		}
	}
	if failed > 0 {
		r.problem("%d of %d GETs failed", failed, r.Probes)
	}
}

// openFiles counts the descriptors process pid holds; 0 when unknown.
func openFiles(pid int) int {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(fds)
}

func registryRSS(r *registryResult, srv *server) int64 {
	v, err := rssBytes(srv.proc.pid())
	if err != nil {
		r.problem("%v", err)
	}
	return v
}
