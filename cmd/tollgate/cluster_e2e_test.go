package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/pebbletest"
	"github.com/tollgate-edge/tollgate/internal/redistest"
)

// TestClusterOfThree: a single-node installation is migrated into Redis,
// then three nodes serve it as one edge: a write on node A is served by
// node C within a second, traffic spread over all nodes is metered once in
// total, a Redis restart mid-load costs visitors nothing and loses no
// usage, and a node killed and restarted with an empty disk rejoins from
// Redis alone.
func TestClusterOfThree(t *testing.T) {
	rs := redistest.Start(t)
	redisURL := "redis://" + rs.Addr() + "/0"

	// 1. A single node on bbolt, then `tollgate store migrate`.
	single := t.TempDir()
	siteDir := filepath.Join(single, "site")
	os.MkdirAll(siteDir, 0o755)
	os.WriteFile(filepath.Join(siteDir, "index.html"), []byte(strings.Repeat("cluster ", 200)), 0o644)
	in := startTollgate(t, single)
	in.registerSite(t, siteDir)
	if out, code := in.cli(t, "credit", "grant", "acme", "5000"); code != 0 {
		t.Fatalf("credit grant: %s", out)
	}
	if out, code := in.cli(t, "credit-code", "create", "welcome-7", "700", "--max-redemptions", "5", "--expires", "30d"); code != 0 || !strings.Contains(out, "WELCOME-7") {
		t.Fatalf("credit-code create: %d %s", code, out)
	}
	if out, code := in.cli(t, "credit", "redeem", "acme", "Welcome-7"); code != 0 || !strings.Contains(out, "balance 5700") {
		t.Fatalf("credit redeem: %d %s", code, out)
	}
	in.stop(t)
	out, err := exec.Command(binary, "store", "migrate", "--from", "bbolt:"+filepath.Join(single, "tollgate.db"), "--to", redisURL).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "orgs            1 records copied and verified") ||
		!strings.Contains(string(out), "credit          2 entries of 1 orgs copied, balances verified") {
		t.Fatalf("store migrate: %v\n%s", err, out)
	}
	t.Logf("migrate:\n%s", out)
	again, err := exec.Command(binary, "store", "migrate", "--from", "bbolt:"+filepath.Join(single, "tollgate.db"), "--to", redisURL).CombinedOutput()
	if err == nil || !strings.Contains(string(again), "refusing to merge") {
		t.Fatalf("a second migration into a populated Redis was not refused: %v\n%s", err, again)
	}

	// 2. Three nodes on Redis, each with its own empty data directory,
	// HTTPS from one Pebble CA.
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	storeExtra := `redis = "` + redisURL + `"`
	tail := "[meter]\nflush_interval = \"200ms\"\n" + acmeSection(ca, "")
	start3 := func(dir string) *instance { return startTollgateFull(t, dir, httpsServer, storeExtra, tail) }
	var nodes []*instance
	for range 3 {
		nodes = append(nodes, start3(t.TempDir()))
	}
	if out, code := nodes[2].cli(t, "--json", "credit", "list", "acme"); code != 0 || !strings.Contains(out, `"balance": 5700`) {
		t.Fatalf("the migrated credit on a cluster node: %d %s", code, out)
	}
	// The code came with its redemption: acme cannot redeem it twice.
	if out, code := nodes[2].cli(t, "--json", "credit-code", "list"); code != 0 || !strings.Contains(out, `"redeemed": 1`) {
		t.Fatalf("the migrated credit code: %d %s", code, out)
	}
	if out, code := nodes[1].cli(t, "credit", "redeem", "acme", "WELCOME-7"); code == 0 || !strings.Contains(out, "already redeemed") {
		t.Fatalf("a second redemption after the migration: %d %s", code, out)
	}
	defer func() {
		for _, n := range nodes { // the current ones: node B is replaced below
			n.stop(t)
		}
	}()
	// A domain attached through node B gets one certificate, used by all.
	if out, code := nodes[1].cli(t, "plan", "put", "free", "--domains", "5", "--sites", "1"); code != 0 {
		t.Fatalf("plan put: %s", out)
	}
	if out, code := nodes[1].cli(t, "domain", "add", "www", "tls.acme.example"); code != 0 {
		t.Fatalf("domain add on node B: %s", out)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			waitFor(t, func() bool { return n.routes("tls.acme.example") })
			resp, _, err := n.httpsGet(roots, "tls.acme.example", "/", "h2")
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d over HTTPS: %v", i, err)
		}
	}
	if ca.Orders() != 1 || ca.Certificates() != 1 {
		t.Fatalf("three nodes made %d orders for %d certificates, want 1", ca.Orders(), ca.Certificates())
	}
	for i, n := range nodes {
		if !n.routes("www.acme.example") {
			t.Fatalf("node %d does not serve the migrated site", i)
		}
	}

	// 3. A write on A is served by C within a second.
	start := time.Now()
	if out, code := nodes[0].cli(t, "domain", "add", "www", "new.acme.example"); code != 0 {
		t.Fatalf("domain add on node A: %s", out)
	}
	for {
		if nodes[2].routes("new.acme.example") {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("node C does not serve a domain added on node A after %v", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	t.Logf("a write on node A was served by node C after %v", time.Since(start))
	for i, n := range nodes { // they followed the change log: no node loaded the whole registry
		resp, err := http.Get("http://" + n.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "\ntollgate_registry_full_loads_total 0\n") {
			t.Errorf("node %d loaded the whole registry to follow the writes (or has no tollgate_registry_full_loads_total)", i)
		}
	}

	// 4. Traffic on all three nodes, with Redis restarted in the middle:
	// the total is metered exactly once (and what was served while Redis
	// was away arrives after it is back).
	// Every node has the site's certificate in memory first: a new
	// certificate cannot be obtained or loaded while Redis is away.
	for i, n := range nodes {
		if resp, _, err := n.httpsGet(roots, "www.acme.example", "/", "http/1.1"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("node %d warm-up: %v %v", i, resp, err)
		}
	}
	baseBytes, baseReqs := stableTotals(t, nodes[2], "acme")
	loads := make([]*load, 3)
	for i, n := range nodes {
		loads[i] = startLoadTLS(n, "www.acme.example", roots)
	}
	waitFor(t, func() bool { return loads[0].ok.Load()+loads[1].ok.Load()+loads[2].ok.Load() >= 300 })
	rs.Stop()
	waitFor(t, func() bool { // still ready (serving), and saying why it is degraded
		resp, err := http.Get("http://" + nodes[0].admin + "/readyz")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.Contains(string(b), "degraded: redis: unreachable")
	})
	base := loads[0].ok.Load() + loads[1].ok.Load() + loads[2].ok.Load()
	waitFor(t, func() bool { return loads[0].ok.Load()+loads[1].ok.Load()+loads[2].ok.Load() >= base+300 }) // served without Redis
	rs.Restart()
	waitFor(t, func() bool { return loads[0].ok.Load()+loads[1].ok.Load()+loads[2].ok.Load() >= base+600 })
	var wantBytes, wantReqs int64
	for i, l := range loads {
		b, r := l.finish()
		wantBytes, wantReqs = wantBytes+b, wantReqs+r
		if f := l.failed.Load(); f != 0 {
			t.Fatalf("node %d: %d visitors saw an error around the Redis restart", i, f)
		}
	}
	waitFor(t, func() bool {
		b, r := nodes[2].usageTotals(t, "acme")
		return b == baseBytes+wantBytes && r == baseReqs+wantReqs
	})
	t.Logf("%d requests, %d bytes over 3 nodes and a Redis restart: metered exactly once", wantReqs, wantBytes)

	// 5. Node B is killed and restarts with an empty disk: it rejoins from
	// Redis alone.
	orders := ca.Orders() // tls.acme.example, and www.acme.example for the load
	nodes[1].cmd.Process.Signal(syscall.SIGKILL)
	<-nodes[1].exited
	fresh := t.TempDir()
	nodes[1] = start3(fresh)
	for _, host := range []string{"www.acme.example", "new.acme.example", "tls.acme.example"} {
		if !nodes[1].routes(host) {
			t.Fatalf("restarted node does not serve %s", host)
		}
	}
	if resp, _, err := nodes[1].httpsGet(roots, "tls.acme.example", "/", "http/1.1"); err != nil || resp.StatusCode != 200 || ca.Orders() != orders {
		t.Fatalf("restarted node over HTTPS: %v %v, orders %d then %d (certificates come from Redis)", resp, err, orders, ca.Orders())
	}
}

// routes reports whether the node routes host: over plain HTTP, with
// HTTPS on, a served host is redirected (308) and an unknown one is 404.
func (in *instance) routes(host string) bool {
	req, _ := http.NewRequest("GET", "http://"+in.http+"/", nil)
	req.Host = host
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusPermanentRedirect
}

// stableTotals waits until org's usage stops moving (every node's last
// flush has landed) and returns it.
func stableTotals(t *testing.T, in *instance, org string) (int64, int64) {
	t.Helper()
	b, r := in.usageTotals(t, org)
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(time.Second) // several flush intervals with no traffic
		b2, r2 := in.usageTotals(t, org)
		if b2 == b && r2 == r {
			return b, r
		}
		if time.Now().After(deadline) {
			t.Fatal("usage totals did not settle")
		}
		b, r = b2, r2
	}
}
