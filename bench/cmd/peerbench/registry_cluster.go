package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// registry-cluster measures the registry of a cluster: for each size N, one
// redis-server and two tollgates on it (node B alone on the server's core,
// node A and Redis on the load side's). Node A gets the N sites through the
// bulk import; node B then starts (a start on a registry of N sites in
// Redis) and follows A's writes through the change log: 100 domain attaches
// a second for 10 s on A, each timed from A's answer until B serves the new
// host.
const (
	clusterWriteRate = 100 // writes a second on node A
	clusterWriteFor  = 10 * time.Second
	// clusterPropagationTimeout bounds the wait for one write to reach B.
	clusterPropagationTimeout = 10 * time.Second
)

// clusterResult is one size of registry-cluster.
type clusterResult struct {
	Sites int `json:"sites"`
	// Import is the bulk import of the N sites through node A, into Redis.
	Import            time.Duration `json:"import_ns"`
	ImportSitesPerSec float64       `json:"import_sites_per_sec"`
	// FollowerStart: node B, from its start until it serves the last site.
	FollowerStart time.Duration `json:"follower_start_ns"`
	// Writes on A and the time each took to be served by B.
	Writes  int           `json:"writes"`
	PropP50 time.Duration `json:"propagation_p50_ns"`
	PropP99 time.Duration `json:"propagation_p99_ns"`
	PropMax time.Duration `json:"propagation_max_ns"`
	// FullLoads is node B's tollgate_registry_full_loads_total after the
	// writes: 0 when it followed them all through the log.
	FullLoads float64 `json:"full_loads"`
	// FollowerRSS is node B's RSS after the writes; RedisRSS redis-server's.
	FollowerRSS int64    `json:"follower_rss_bytes"`
	RedisRSS    int64    `json:"redis_rss_bytes"`
	Valid       bool     `json:"valid"`
	Problems    []string `json:"problems,omitempty"`
}

func (r *clusterResult) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// runRegistryCluster measures each size of -registry-sizes.
func (b *bench) runRegistryCluster(ctx context.Context, sc scenario) scenarioResult {
	res := scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusMeasured, Base: srvTollgate, Cluster: []clusterResult{}}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		res.Status, res.Note = statusFailed, "redis-server is not installed (make test-deps installs it)"
		return res
	}
	sizes, _ := parseSizes(b.cfg.RegistrySizes) // checked by parseSettings
	for _, n := range sizes {
		if ctx.Err() != nil {
			break
		}
		r := b.clusterAt(ctx, redisBin, n)
		r.Valid = len(r.Problems) == 0
		res.Cluster = append(res.Cluster, r)
		b.logf("%s %s sites: import into redis %s (%.0f sites/s), node B ready %s, propagation p50 %s p99 %s max %s over %d writes, "+
			"full loads %v, node B RSS %s, redis RSS %s %v", sc.ID, groupThousands(int64(n)), fmtLatency(r.Import), r.ImportSitesPerSec,
			fmtLatency(r.FollowerStart), fmtLatency(r.PropP50), fmtLatency(r.PropP99), fmtLatency(r.PropMax), r.Writes, r.FullLoads,
			fmtBytes(r.FollowerRSS), fmtBytes(r.RedisRSS), r.Problems)
	}
	if ctx.Err() != nil {
		res.Status, res.Note = statusFailed, "interrupted"
	}
	return res
}

func (b *bench) clusterAt(ctx context.Context, redisBin string, n int) clusterResult {
	r := clusterResult{Sites: n}
	dir := filepath.Join(b.tmp, fmt.Sprintf("registry-cluster-%d", n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.problem("%v", err)
		return r
	}
	redisProc, redisAddr, err := startRedis(ctx, b.ps, b.cpu, redisBin, dir)
	if err != nil {
		r.problem("redis: %v", err)
		return r
	}
	defer redisProc.stop()
	opts := tollgateOptions{Redis: "redis://" + redisAddr + "/0", ReadyTimeout: registryStartTimeout}
	// Node A, the writer, runs on the load side's core; node B, the one
	// measured, has the server's core to itself, as separate machines
	// would have.
	aCPU := b.cpu
	aCPU.Server = b.cpu.Load
	a, err := startTollgate(ctx, b.ps, aCPU, b.cfg.Tollgate, fmt.Sprintf("tollgate-cluster-a-%d", n), filepath.Join(dir, "a"), b.site, opts)
	if err != nil {
		r.problem("node A: %v", err)
		return r
	}
	defer a.proc.stop()
	ac := newAdminHTTP(a.admin)
	defer ac.hc.CloseIdleConnections()
	imp := registryResult{Sites: n, Source: b.cfg.RegistrySource}
	if err := b.registryImport(ctx, ac, &imp); err != nil || len(imp.Problems) > 0 {
		r.problem("import: %v %v", err, imp.Problems)
		return r
	}
	r.Import, r.ImportSitesPerSec = imp.Import, imp.ImportSitesPerSec

	opts.Reopen = filepath.Join(dir, "b", "b.db") // a new file: the registry is in Redis
	start := time.Now()
	bNode, err := startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, fmt.Sprintf("tollgate-cluster-b-%d", n), filepath.Join(dir, "b"), b.site, opts)
	if err == nil {
		err = waitReady(ctx, bNode.proc, bNode.url("/"), registryHost(n-1), registryStartTimeout)
	}
	if err != nil {
		r.problem("node B: %v", err)
		return r
	}
	defer bNode.proc.stop()
	r.FollowerStart = time.Since(start)

	b.propagate(ctx, &r, ac, bNode.Addr, n)
	r.FullLoads = scrapeMetric(bNode.admin.Addr, "tollgate_registry_full_loads_total")
	if r.FullLoads != 0 {
		r.problem("node B loaded the whole registry %v times instead of following the writes", r.FullLoads)
	}
	for _, node := range []struct {
		name string
		s    *server
	}{{"A", a}, {"B", bNode}} {
		if lost := usageLost(node.s.admin.Addr); lost != "" {
			r.problem("node %s: %s", node.name, lost)
		}
	}
	r.FollowerRSS, _ = rssBytes(bNode.proc.pid())
	r.RedisRSS, _ = rssBytes(redisProc.pid())
	return r
}

// propagate attaches a domain on node A clusterWriteRate times a second for
// clusterWriteFor and times each until node B serves it.
func (b *bench) propagate(ctx context.Context, r *clusterResult, ac *adminHTTP, bAddr string, n int) {
	total := int(clusterWriteFor.Seconds() * clusterWriteRate)
	tick := time.NewTicker(time.Second / clusterWriteRate)
	defer tick.Stop()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for j := range total {
		<-tick.C
		host := fmt.Sprintf("w-%d.%s", j, registryDomain)
		body := fmt.Sprintf(`{"domain":%q}`, host)
		code, answer, err := ac.post(ctx, "/v1/sites/s-"+strconv.Itoa(j%n)+"/domains", "application/json", []byte(body))
		if err != nil || code != http.StatusCreated {
			r.problem("attaching %s on node A: %d %s %v", host, code, strings.TrimSpace(string(answer)), err)
			break
		}
		written := time.Now()
		wg.Go(func() {
			err := waitServed(ctx, bAddr, host, clusterPropagationTimeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.problem("%s on node B: %v", host, err)
				return
			}
			lat = append(lat, time.Since(written))
		})
	}
	wg.Wait()
	r.Writes = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		r.PropP50, r.PropP99, r.PropMax = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
}

// waitServed polls GET / as host on addr every millisecond until it answers
// 200: waitReady's 20 ms would be most of what a propagation measures.
func waitServed(ctx context.Context, addr, host string, timeout time.Duration) error {
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) && ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		req.Host = host
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	return fmt.Errorf("not served within %s: %s", timeout, last)
}

// startRedis starts redis-server without persistence on a free port, on
// the load side's core, and waits for PONG.
func startRedis(ctx context.Context, ps *procs, cpu cpuPlan, bin, dir string) (*proc, string, error) {
	type started struct {
		p    *proc
		addr string
	}
	s, err := retryStart(ctx, func(attempt int) (started, error) {
		ports, err := freePorts(1)
		if err != nil {
			return started{}, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
		argv := append(append([]string{}, cpu.Upstream...), bin, "--port", strconv.Itoa(ports[0]), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir)
		p, err := ps.start("redis", argv, nil, filepath.Join(dir, fmt.Sprintf("redis-%d.log", attempt)))
		if err != nil {
			return started{}, err
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if p.exited() {
				break
			}
			if redisPing(addr) == nil {
				return started{p, addr}, nil
			}
		}
		p.stop()
		return started{}, fmt.Errorf("redis-server on %s did not answer PING: %s", addr, p.logTail())
	})
	return s.p, s.addr, err
}

func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// usageLost names the usage a tollgate lost, as its metrics count it
// ("" when none): batches dropped past meter.max_pending, or backlogs the
// spool file could not hold. The registry at a million sites must not
// cost its usage (at 1,000,000 sites a minute's storage once overran the
// meter's flush on Redis and was dropped).
func usageLost(adminAddr string) string {
	var lost []string
	for _, m := range []string{"tollgate_meter_dropped_batches_total", "tollgate_meter_spool_file_errors_total"} {
		switch v := scrapeMetric(adminAddr, m); {
		case v < 0:
			lost = append(lost, m+" not readable")
		case v > 0:
			lost = append(lost, fmt.Sprintf("%s %v", m, v))
		}
	}
	if len(lost) == 0 {
		return ""
	}
	return "usage lost: " + strings.Join(lost, ", ")
}

// scrapeMetric sums the samples of a metric on tollgate's admin /metrics;
// -1 when it cannot be read or is absent.
func scrapeMetric(adminAddr, name string) float64 {
	resp, err := plainClient.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}
