package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/valyala/fasthttp"
)

// countingGates hands out real billing gates and remembers each distinct
// one: a gate is memory held for the life of the process.
type countingGates struct {
	b    *billing.Billing
	mu   sync.Mutex
	seen map[*access.Gate]bool
}

func (c *countingGates) Gate(org string) *access.Gate {
	g := c.b.Gate(org)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[g] = true
	return g
}

func (c *countingGates) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// heapInuse is the live heap after a full collection.
func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// vmRSS is the process's resident set in bytes (0 where /proc is absent).
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

const (
	// inventedHosts is how many random {owner}.pages.test hosts are asked.
	inventedHosts = 100_000
	// ownerLookupRate is the test's [sites] owner_lookup_rate: it bounds
	// the Gitea calls of the whole run.
	ownerLookupRate = 20
	// inventedHeapBound is the live heap the whole run may leave behind.
	inventedHeapBound = 4 << 20
)

// TestInventedPagesHosts: requests for 100,000 random {owner}.pages.test
// hosts (a crawler, or an attacker inventing owners) against a real Gitea
// create no billing gate and no org, leave the live heap flat, cost Gitea
// calls bounded by the global owner look-up rate, not by the requests, and
// a real owner is served within 100 ms throughout. Each invented host is
// answered 404 (looked up: no such owner) or 503 (the look-up rate is
// spent).
func TestInventedPagesHosts(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "pages")
	gs.PutFile(t, "alice", "pages", "main", "index.html", []byte("alice home"))
	gs.WaitRaw(t, "alice", "pages", "main", "index.html")

	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	must(t, err)
	bill, err := billing.New(ctx, billing.Config{}, billing.Options{Sites: reg, Store: st, Metrics: prometheus.NewRegistry()})
	must(t, err)
	gates := &countingGates{b: bill, seen: map[*access.Gate]bool{}}
	cfg := sites.Config{GiteaURL: gs.URL(), GiteaToken: gs.Token(), OwnerLookupRate: ownerLookupRate}
	cache := content.NewCache(cfg)
	g, err := gitea.New(cache, cfg, gitea.Options{})
	must(t, err)
	p, err := New(Config{}, Limits{}, Options{Registry: reg, Cache: cache, Metrics: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Pages:  g, PagesDomain: "pages.test", Orgs: reg, Gates: gates})
	must(t, err)
	t.Cleanup(func() { p.Shutdown(context.Background()) })

	// alice is real: served, and her org is created in the background.
	alice := func() (status int, took time.Duration) {
		c := newCtx("alice.pages.test", "/")
		start := time.Now()
		p.Handler(c)
		took = time.Since(start)
		if c.Response.StatusCode() == fasthttp.StatusOK && string(c.Response.Body()) != "alice home" {
			t.Fatalf("alice.pages.test/: body %q", c.Response.Body())
		}
		return c.Response.StatusCode(), took
	}
	if status, _ := alice(); status != fasthttp.StatusOK {
		t.Fatalf("alice.pages.test/: status %d; want 200", status)
	}
	deadline := time.Now().Add(10 * time.Second)
	for reg.Snapshot().Orgs.Get(sites.SyntheticOrgID("alice")) == nil {
		if time.Now().After(deadline) {
			t.Fatal("alice's org was not created")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if status, _ := alice(); status != fasthttp.StatusOK {
		t.Fatalf("alice.pages.test/ once her org exists: status %d; want 200", status)
	}

	orgs0, gates0, calls0 := reg.Snapshot().Orgs.Len(), gates.count(), g.Calls.Load()
	heap0, rss0 := heapInuse(), vmRSS()
	statuses := map[int]int{}
	var slowest time.Duration
	start := time.Now()
	for i := range inventedHosts {
		c := newCtx(fmt.Sprintf("x%016x.pages.test", rand.Uint64()), "/")
		p.Handler(c)
		statuses[c.Response.StatusCode()]++
		if i%1000 != 999 {
			continue
		}
		// Checked as it goes, so that a regression fails fast.
		if n := gates.count() - gates0; n != 0 {
			t.Fatalf("after %d invented hosts: %d new billing gates; want 0", i+1, n)
		}
		if n, max := g.Calls.Load()-calls0, lookupBound(time.Since(start)); n > max {
			t.Fatalf("after %d invented hosts in %v: %d Gitea calls; want at most %d", i+1, time.Since(start), n, max)
		}
		status, took := alice()
		if status != fasthttp.StatusOK {
			t.Fatalf("after %d invented hosts: alice.pages.test/ status %d; want 200", i+1, status)
		}
		slowest = max(slowest, took)
	}
	elapsed := time.Since(start)
	heap1, rss1 := heapInuse(), vmRSS()
	calls := g.Calls.Load() - calls0

	for status, n := range statuses {
		if status != fasthttp.StatusNotFound && status != fasthttp.StatusServiceUnavailable {
			t.Errorf("%d invented hosts answered %d; want only 404 and 503", n, status)
		}
	}
	if n := reg.Snapshot().Orgs.Len() - orgs0; n != 0 {
		t.Errorf("%d orgs created for invented owners; want 0", n)
	}
	if slowest > 100*time.Millisecond {
		t.Errorf("alice.pages.test/ took up to %v during the run; want within 100ms", slowest)
	}
	growth := int64(heap1) - int64(heap0)
	if growth > inventedHeapBound {
		t.Errorf("live heap grew by %d bytes over %d invented hosts; want at most %d", growth, inventedHosts, inventedHeapBound)
	}
	t.Logf("%d invented hosts in %v: statuses %v, %d Gitea calls (bound %d), gates +%d, live heap %+d bytes (%d -> %d), RSS %d -> %d bytes, alice slowest %v",
		inventedHosts, elapsed.Round(time.Millisecond), statuses, calls, lookupBound(elapsed), gates.count()-gates0,
		growth, heap0, heap1, rss0, rss1, slowest)
}

// lookupBound is the most Gitea calls the run may make in d: the owner
// look-ups (the burst, then the rate; one call each), plus a few for alice
// (a background recheck of her branch).
func lookupBound(d time.Duration) int64 {
	return ownerLookupRate + int64(d.Seconds()*ownerLookupRate) + 4
}
