package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-edge/tollgate/internal/redistest"
)

// TestRedisRestartedEmptyKeepsTheEdge: with [store] redis, Redis restarted
// without its data under a running node. Visitors keep getting 200, the
// admin API lists the same orgs, /readyz says degraded naming the registry,
// tollgate_store_registry_lost is 1 and one ERROR is logged; registry writes
// are refused (503) instead of seeding a one-record registry. Usage Redis
// held is lost, exactly that and nothing counted after the restart (the
// figure docs/cluster.md states). Putting the registry back (what
// `tollgate store restore` does) ends the condition and writes work again.
func TestRedisRestartedEmptyKeepsTheEdge(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	in := startTollgateConf(t, dir, `redis = "redis://`+rs.Addr()+`/0"`, "[meter]\nflush_interval = \"200ms\"\n")
	defer in.stop(t)
	in.registerSite(t, in.siteDir(t, strings.Repeat("kept ", 200)))

	_, orgsBefore := in.adminCall(t, "GET", "/v1/orgs", "")
	if !strings.Contains(orgsBefore, `"acme"`) {
		t.Fatalf("GET /v1/orgs before: %s", orgsBefore)
	}
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rc.Close()
	ctx := context.Background()
	saved := map[string]map[string]string{}
	for _, b := range []string{"plans", "orgs", "sites", "domains"} { // the registry's hashes (store.RedisKV)
		m, err := rc.HGetAll(ctx, "{tollgate:reg}:b:"+b).Result()
		if err != nil || len(m) == 0 {
			t.Fatalf("registry bucket %s in Redis: %v %v", b, m, err)
		}
		saved[b] = m
	}

	// Usage that reached Redis before the restart.
	l := startLoad(in, "www.acme.example")
	waitFor(t, func() bool { return l.ok.Load() >= 200 })
	lostBytes, lostReqs := l.finish()
	waitForTotals(t, in, "acme", lostBytes, lostReqs)

	// Redis comes back empty; visitors keep coming (the old watcher
	// emptied the edge within a second).
	restarted := time.Now()
	rs.RestartEmpty()
	l = startLoad(in, "www.acme.example")
	waitFor(t, func() bool { return l.failed.Load() > 0 || in.metric(t, "tollgate_store_registry_lost") == 1 })
	if f := l.failed.Load(); f > 0 {
		l.finish()
		t.Fatalf("%d visitor requests failed or were not 200 within %v of Redis coming back empty", f, time.Since(restarted).Round(time.Millisecond))
	}
	t.Logf("loss noticed %v after the restart", time.Since(restarted).Round(time.Millisecond))
	n := l.ok.Load()
	waitFor(t, func() bool { return l.ok.Load() >= n+300 }) // served after the loss was noticed
	keptBytes, keptReqs := l.finish()
	if f := l.failed.Load(); f != 0 {
		t.Fatalf("%d visitor requests failed or were not 200 after Redis came back empty", f)
	}
	if code, orgs := in.adminCall(t, "GET", "/v1/orgs", ""); code != 200 || orgs != orgsBefore {
		t.Fatalf("GET /v1/orgs after the loss: %d %s; want %s", code, orgs, orgsBefore)
	}
	code, ready := in.readyz(t)
	if code != 200 || !strings.Contains(ready, "degraded") || !strings.Contains(ready, "registry: lost from redis") ||
		!strings.Contains(ready, "1 orgs, 1 sites, 1 domains") {
		t.Fatalf("/readyz after the loss: %d %q", code, ready)
	}
	if got := strings.Count(in.stderr.String(), `"level":"ERROR","msg":"registry lost from redis`); got != 1 {
		t.Fatalf("%d ERROR lines about the lost registry, want 1:\n%s", got, in.stderr)
	}
	code, body := in.adminCall(t, "POST", "/v1/orgs", `{"id":"late","plan":"free"}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "tollgate store restore") {
		t.Fatalf("a registry write during the loss: %d %s; want 503 naming the restore", code, body)
	}
	if n, _ := rc.Exists(ctx, "{tollgate:reg}:b:orgs").Result(); n != 0 {
		t.Fatal("the refused write reached Redis")
	}

	// Usage: what Redis held is gone, exactly; what was counted after the
	// restart is all there.
	waitForTotals(t, in, "acme", keptBytes, keptReqs)
	if resp, body := in.get(t, "www.acme.example", "/"); resp.StatusCode != 200 || !strings.HasPrefix(body, "kept ") {
		t.Fatalf("site after the loss: %d %.40q", resp.StatusCode, body)
	}
	t.Logf("usage lost with Redis' data: %d requests, %d bytes (all it held); kept exactly: %d requests, %d bytes",
		lostReqs, lostBytes, keptReqs, keptBytes)

	// The registry is put back: the node accepts it and writes work again.
	_, err := rc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for b, m := range saved {
			p.HSet(ctx, "{tollgate:reg}:b:"+b, m)
		}
		p.Incr(ctx, "{tollgate:reg}:version")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return in.metric(t, "tollgate_store_registry_lost") == 0 })
	if code, ready := in.readyz(t); code != 200 || strings.Contains(ready, "registry") {
		t.Fatalf("/readyz after the restore: %d %q", code, ready)
	}
	if code, body := in.adminCall(t, "POST", "/v1/orgs", `{"id":"late","plan":"free"}`); code != http.StatusCreated {
		t.Fatalf("a registry write after the restore: %d %s", code, body)
	}
	if !strings.Contains(in.stderr.String(), "registry in redis matches this node's snapshot again") {
		t.Fatalf("the end of the loss was not logged:\n%s", in.stderr)
	}
}

// waitForTotals waits until org's usage is exactly bytes and requests, and
// says what it was otherwise.
func waitForTotals(t *testing.T, in *instance, org string, bytes, requests int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, r := in.usageTotals(t, org)
		if b == bytes && r == requests {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage of %s: %d bytes, %d requests; want %d, %d", org, b, r, bytes, requests)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}
