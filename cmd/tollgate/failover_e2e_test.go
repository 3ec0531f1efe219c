package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/redistest"
)

// adminWriter PUTs a plan through the admin API every 50 ms until stopped
// and records every answer that is not a success, and the slowest one.
type adminWriter struct {
	in      *instance
	stop    chan struct{}
	done    chan struct{}
	writes  atomic.Int64
	mu      sync.Mutex
	failed  []string
	slowest time.Duration
}

func startAdminWriter(in *instance) *adminWriter {
	w := &adminWriter{in: in, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond): // write rate, not synchronization
			}
			body := fmt.Sprintf(`{"sites":%d,"domains":5}`, 1+i%5)
			req, _ := http.NewRequest("PUT", "http://"+in.admin+"/v1/plans/writer", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e2eToken)
			req.Header.Set("Content-Type", "application/json")
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			took := time.Since(start)
			msg := ""
			if err != nil {
				msg = err.Error()
			} else {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					msg = fmt.Sprintf("%d %s", resp.StatusCode, b)
				}
			}
			w.writes.Add(1)
			w.mu.Lock()
			w.slowest = max(w.slowest, took)
			if msg != "" {
				w.failed = append(w.failed, msg)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// finish stops the writer and fails the test if any write failed.
func (w *adminWriter) finish(t *testing.T) (writes int64, slowest time.Duration) {
	t.Helper()
	close(w.stop)
	<-w.done
	if len(w.failed) > 0 {
		t.Fatalf("%d of %d admin writes failed across the failover: %v", len(w.failed), w.writes.Load(), w.failed)
	}
	return w.writes.Load(), w.slowest
}

// readyzNow returns /readyz's status and body (an error as the body).
func (in *instance) readyzNow() (int, string) {
	resp, err := http.Get("http://" + in.admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// addOrgSite creates org on plan "p" with site NAME-site serving dir at
// host, through the admin CLI.
func (in *instance) addOrgSite(t *testing.T, org, dir, host string) {
	t.Helper()
	for _, s := range [][]string{{"org", "create", org, "--plan", "p"}, {"site", "create", org, org + "-site", "--dir", dir}, {"domain", "add", org + "-site", host}} {
		if out, code := in.cli(t, s...); code != 0 {
			t.Fatalf("%v: %s", s, out)
		}
	}
}

// TestRedisClusterFailover: tollgate on a Redis Cluster of 3 masters + 3
// replicas, under load on two orgs: one whose usage lives on the shard that
// also holds the registry, one on another shard. The registry's master is
// killed. While the replica is promoted: no visitor error, /readyz says
// which shard fails, admin writes wait for the new master instead of
// answering 500, the healthy shard's org keeps flushing. After: the other
// org's usage flows again within a few seconds, the totals are exact, and
// `tollgate store migrate` reads the cluster.
func TestRedisClusterFailover(t *testing.T) {
	rc := redistest.StartCluster(t)
	const regKey = "{tollgate:reg}:version"
	regMaster := rc.MasterOf(regKey)
	// One org on the registry's shard, one elsewhere.
	var onDead, onHealthy string
	for i := 0; onDead == "" || onHealthy == ""; i++ {
		org := fmt.Sprintf("org%d", i)
		if rc.MasterOf("tg:usage:{"+org+"}:applied") == regMaster {
			onDead = cmp.Or(onDead, org)
		} else {
			onHealthy = cmp.Or(onHealthy, org)
		}
	}

	dir := t.TempDir()
	in := startTollgateConf(t, dir, "redis = \""+rc.URL()+"\"\nredis_mode = \"cluster\"", "[meter]\nflush_interval = \"100ms\"\n")
	defer in.stop(t)
	if out, code := in.cli(t, "plan", "put", "p", "--domains", "5", "--sites", "1"); code != 0 {
		t.Fatalf("plan put: %s", out)
	}
	site := in.siteDir(t, strings.Repeat("shard ", 100))
	in.addOrgSite(t, onDead, site, onDead+".example")
	in.addOrgSite(t, onHealthy, site, onHealthy+".example")
	waitFor(t, func() bool { r, _ := in.get(t, onHealthy+".example", "/"); return r.StatusCode == 200 })
	baseB1, baseR1 := stableTotals(t, in, onDead)
	baseB2, baseR2 := stableTotals(t, in, onHealthy)
	loadDead, loadHealthy := startLoad(in, onDead+".example"), startLoad(in, onHealthy+".example")
	waitFor(t, func() bool { _, r := in.usageTotals(t, onDead); return r > baseR1+100 })
	writer := startAdminWriter(in)

	killed := time.Now()
	regMaster.Stop()
	// The healthy shard's org keeps flushing while the other shard has
	// no master.
	_, healthyAtKill := in.usageTotals(t, onHealthy)
	var lastErr error
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, r, err := in.usageTotalsErr(onHealthy)
		if err == nil && r > healthyAtKill+50 {
			break
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("usage of %s (on a healthy shard) did not move within 10s of the kill: %v\n%s", onHealthy, lastErr, in.stderr)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	healthyFlowing := time.Since(killed)
	// /readyz: still serving, and naming the failing shard.
	var lastReady string
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, body := in.readyzNow()
		if code == 200 && strings.Contains(body, "degraded: ") && strings.Contains(body, "redis: ") && strings.Contains(body, "shard "+regMaster.Addr()) {
			break
		}
		lastReady = fmt.Sprintf("%d %s", code, body)
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not name the failed shard %s within 10s: %s", regMaster.Addr(), lastReady)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	newMaster := rc.WaitFailover(regKey, regMaster)
	promoted := time.Since(killed)
	if newMaster == regMaster {
		t.Fatal("no replica was promoted")
	}
	if healthyFlowing >= promoted {
		t.Fatalf("%s (healthy shard) flushed again only %v after the kill, after the promotion (%v)", onHealthy, healthyFlowing, promoted)
	}
	// The dead shard's org: its usage moves again after the promotion.
	deadAtPromotion := int64(-1)
	var recovered time.Duration
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, r, err := in.usageTotalsErr(onDead)
		if err == nil {
			if deadAtPromotion < 0 {
				deadAtPromotion = r
			} else if r > deadAtPromotion+50 {
				recovered = time.Since(killed) - promoted
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage of %s (on the failed-over shard) did not move within 10s of the promotion", onDead)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	waitFor(t, func() bool { code, body := in.readyzNow(); return code == 200 && strings.TrimSpace(body) == "ready" })
	ready := time.Since(killed) - promoted
	after := writer.writes.Load()
	waitFor(t, func() bool { return writer.writes.Load() > after+5 }) // writes against the new master
	writes, slowest := writer.finish(t)

	// Usage is exact: what the clients received, counted once.
	wantB1, wantR1 := loadDead.finish()
	wantB2, wantR2 := loadHealthy.finish()
	if f := loadDead.failed.Load() + loadHealthy.failed.Load(); f != 0 {
		t.Fatalf("%d visitor requests failed during the failover", f)
	}
	b1, r1 := stableTotals(t, in, onDead)
	b2, r2 := stableTotals(t, in, onHealthy)
	b1, r1, b2, r2 = b1-baseB1, r1-baseR1, b2-baseB2, r2-baseR2
	if b1 != wantB1 || r1 != wantR1 || b2 != wantB2 || r2 != wantR2 {
		t.Fatalf("usage after the failover: %s %d B/%d req (clients got %d/%d), %s %d/%d (clients got %d/%d)",
			onDead, b1, r1, wantB1, wantR1, onHealthy, b2, r2, wantB2, wantR2)
	}
	t.Logf("master %s killed: %s usage kept flowing (seen %v after the kill); replica %s promoted after %v; "+
		"%s usage flowing again %v after the promotion, /readyz ready %v after it; %d admin writes, none failed, slowest %v; "+
		"%d+%d requests metered exactly",
		regMaster.Addr(), onHealthy, healthyFlowing.Round(time.Millisecond), newMaster.Addr(), promoted.Round(time.Millisecond),
		onDead, recovered.Round(time.Millisecond), ready.Round(time.Millisecond), writes, slowest.Round(time.Millisecond), wantR1, wantR2)
	if recovered > 3*time.Second {
		t.Fatalf("flushes to the failed-over shard resumed %v after the promotion, want within 3s", recovered)
	}

	// `tollgate store migrate` reads (and would write) a cluster.
	out, err := exec.Command(binary, "store", "migrate", "--from", rc.URL(), "--from-redis-mode", "cluster",
		"--to", "bbolt:"+filepath.Join(t.TempDir(), "copy.db")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "orgs            2 records copied and verified") {
		t.Fatalf("store migrate from the cluster: %v\n%s", err, out)
	}
}

// TestRedisSentinelFailover: tollgate on a password-protected master with
// one replica and three sentinels, configured with the documented URL
// (redis://:PASSWORD@sentinel?…&master_name=…). The master is killed under
// load and admin writes: no admin write fails, no visitor error, usage
// exact.
func TestRedisSentinelFailover(t *testing.T) {
	const pw = "master-secret"
	sn := redistest.StartSentinel(t, redistest.SentinelOptions{Password: pw})
	url := strings.Replace(sn.URL(), "redis://", "redis://:"+pw+"@", 1)
	dir := t.TempDir()
	in := startTollgateConf(t, dir, "redis = \""+url+"\"\nredis_mode = \"sentinel\"", "[meter]\nflush_interval = \"100ms\"\n")
	defer in.stop(t)
	if out, code := in.cli(t, "plan", "put", "p", "--domains", "5", "--sites", "1"); code != 0 {
		t.Fatalf("plan put: %s", out)
	}
	in.addOrgSite(t, "acme", in.siteDir(t, strings.Repeat("sentinel ", 100)), "www.acme.example")
	ld := startLoad(in, "www.acme.example")
	waitFor(t, func() bool { _, r := in.usageTotals(t, "acme"); return r > 100 })
	writer := startAdminWriter(in)

	killed := time.Now()
	sn.Master.Stop()
	sn.WaitFailover()
	promoted := time.Since(killed)
	_, atPromotion := in.usageTotals(t, "acme")
	waitFor(t, func() bool { _, r, err := in.usageTotalsErr("acme"); return err == nil && r > atPromotion+50 })
	recovered := time.Since(killed) - promoted
	after := writer.writes.Load()
	waitFor(t, func() bool { return writer.writes.Load() > after+5 }) // writes against the new master
	writes, slowest := writer.finish(t)
	wantB, wantR := ld.finish()
	if f := ld.failed.Load(); f != 0 {
		t.Fatalf("%d visitor requests failed during the failover", f)
	}
	if b, r := stableTotals(t, in, "acme"); b != wantB || r != wantR {
		t.Fatalf("usage after the failover: %d B/%d req, clients got %d/%d", b, r, wantB, wantR)
	}
	t.Logf("master killed, replica promoted after %v; usage flowing again %v after; %d admin writes, none failed, slowest %v; %d requests metered exactly",
		promoted.Round(time.Millisecond), recovered.Round(time.Millisecond), writes, slowest.Round(time.Millisecond), wantR)
}

// usageTotalsErr is usageTotals that reports a failed query (the org's
// shard down) instead of failing the test.
func (in *instance) usageTotalsErr(org string) (egress, requests int64, err error) {
	req, _ := http.NewRequest("GET", "http://"+in.admin+"/v1/usage?org="+org+"&step=month", nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return 0, 0, fmt.Errorf("usage of %s: %d %s", org, resp.StatusCode, b)
	}
	var u struct {
		Totals struct {
			EgressBytes int64 `json:"egress_bytes"`
			Requests    int64 `json:"requests"`
		} `json:"totals"`
	}
	err = json.NewDecoder(resp.Body).Decode(&u)
	return u.Totals.EgressBytes, u.Totals.Requests, err
}
