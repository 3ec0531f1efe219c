package gitea

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
)

// fakeUsers answers Gitea's GET /api/v1/users/{name}: 200 for the names in
// exist, 404 for the others, counting the calls; while hang is set, calls
// wait until the test ends. (The owner look-up is one plain API call; the
// real Gitea is exercised by the proxy's TestInventedPagesHosts.)
type fakeUsers struct {
	url   string
	calls atomic.Int64
	hang  atomic.Bool
}

func newFakeUsers(t *testing.T, exist ...string) *fakeUsers {
	t.Helper()
	f := &fakeUsers{}
	end := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		if f.hang.Load() {
			<-end
		}
		name, _ := strings.CutPrefix(r.URL.Path, "/api/v1/users/")
		if slices.Contains(exist, name) {
			w.Write([]byte(`{"login":"` + name + `"}`))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(end) }) // runs first: the hanging calls end
	f.url = srv.URL
	return f
}

func newOwnersSource(t *testing.T, url string, cfg sites.Config, opts Options) *Source {
	t.Helper()
	cfg.GiteaURL = url
	g, err := New(content.NewCache(cfg), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestKnownOwner: each way an owner look-up is bounded, with the Gitea
// calls it may cost.
func TestKnownOwner(t *testing.T) {
	tests := []struct {
		name  string
		cfg   sites.Config
		run   func(g *Source) error // asks KnownOwner; an error fails the test
		calls int64                 // Gitea calls the run may make, at most
	}{
		{
			name: "invented owners past the burst are refused without a call",
			cfg:  sites.Config{OwnerLookupRate: 5},
			run: func(g *Source) error {
				limited := 0
				for i := range 100 {
					ok, err := g.KnownOwner(fmt.Sprintf("invented%d", i))
					switch {
					case errors.Is(err, ErrOwnerLookupLimited):
						limited++
					case err != nil || ok:
						return fmt.Errorf("invented%d: %v, %v", i, ok, err)
					}
				}
				if limited < 94 { // 5 in the burst, maybe 1 more token if the run takes 200ms
					return fmt.Errorf("%d of 100 invented owners refused; want at least 94", limited)
				}
				return nil
			},
			calls: 6,
		},
		{
			name: "an owner that does not exist is remembered for negative_ttl",
			cfg:  sites.Config{NegativeTTL: time.Hour},
			run: func(g *Source) error {
				for range 50 {
					if ok, err := g.KnownOwner("nobody"); ok || err != nil {
						return fmt.Errorf("nobody: %v, %v", ok, err)
					}
				}
				return nil
			},
			calls: 1,
		},
		{
			name: "an owner that exists is remembered",
			cfg:  sites.Config{Revalidate: time.Hour},
			run: func(g *Source) error {
				for range 50 {
					if ok, err := g.KnownOwner("alice"); !ok || err != nil {
						return fmt.Errorf("alice: %v, %v", ok, err)
					}
				}
				return nil
			},
			calls: 1,
		},
		{
			name: "concurrent first requests for one owner share one call",
			cfg:  sites.Config{OwnerLookupRate: 1},
			run: func(g *Source) error {
				var wg sync.WaitGroup
				errs := make(chan error, 20)
				for range 20 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if ok, err := g.KnownOwner("alice"); !ok || err != nil {
							errs <- fmt.Errorf("alice: %v, %v", ok, err)
						}
					}()
				}
				wg.Wait()
				close(errs)
				return <-errs
			},
			calls: 1,
		},
		{
			name: "a known owner is served while it is rechecked in the background",
			cfg:  sites.Config{Revalidate: time.Nanosecond},
			run: func(g *Source) error {
				for range 50 {
					if ok, err := g.KnownOwner("alice"); !ok || err != nil {
						return fmt.Errorf("alice: %v, %v", ok, err)
					}
				}
				return nil
			},
			calls: 51, // the first look-up, then at most one recheck at a time
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeUsers(t, "alice")
			g := newOwnersSource(t, f.url, tt.cfg, Options{})
			if err := tt.run(g); err != nil {
				t.Fatal(err)
			}
			if n := f.calls.Load(); n > tt.calls || n == 0 {
				t.Fatalf("%d Gitea calls; want 1..%d", n, tt.calls)
			}
		})
	}
}

// TestKnownOwnerRecheckDoesNotBlock: a known owner whose recheck hangs is
// still answered at once, from memory.
func TestKnownOwnerRecheckDoesNotBlock(t *testing.T) {
	f := newFakeUsers(t, "alice")
	g := newOwnersSource(t, f.url, sites.Config{Revalidate: time.Nanosecond, GiteaTimeout: time.Minute}, Options{})
	if ok, err := g.KnownOwner("alice"); !ok || err != nil {
		t.Fatalf("alice: %v, %v", ok, err)
	}
	f.hang.Store(true) // every recheck from now on hangs
	start := time.Now()
	for range 100 {
		if ok, err := g.KnownOwner("alice"); !ok || err != nil {
			t.Fatalf("alice while rechecked: %v, %v", ok, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("100 answers from memory took %v", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling interval: the recheck runs in the background
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d Gitea calls; want 2 (the look-up, then one hanging recheck)", n)
	}
}

// TestKnownOwnerMemoryBounded: answers of owners that do not exist are
// dropped once expired, so a crawler's invented owners do not accumulate.
func TestKnownOwnerMemoryBounded(t *testing.T) {
	f := newFakeUsers(t)
	const ttl = time.Minute
	clk := clocktest.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	g := newOwnersSource(t, f.url, sites.Config{NegativeTTL: ttl, OwnerLookupRate: -1}, Options{Now: clk.Now})
	for i := range 1000 {
		if _, err := g.KnownOwner(fmt.Sprintf("invented%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(ttl) // every answer expires
	if _, err := g.KnownOwner("one-more"); err != nil {
		t.Fatal(err)
	}
	g.owners.mu.RLock()
	n := len(g.owners.m)
	g.owners.mu.RUnlock()
	if n > 1 {
		t.Fatalf("%d owner answers remembered after the others expired; want 1", n)
	}
}

// TestKnownOwnerAllocs: a remembered answer allocates nothing.
func TestKnownOwnerAllocs(t *testing.T) {
	f := newFakeUsers(t, "alice")
	g := newOwnersSource(t, f.url, sites.Config{Revalidate: time.Hour, NegativeTTL: time.Hour}, Options{})
	for _, owner := range []string{"alice", "nobody"} {
		if _, err := g.KnownOwner(owner); err != nil {
			t.Fatal(err)
		}
		if allocs := testing.AllocsPerRun(1000, func() { g.KnownOwner(owner) }); allocs != 0 {
			t.Fatalf("%s: %.1f allocations per remembered answer; want 0", owner, allocs)
		}
	}
}
