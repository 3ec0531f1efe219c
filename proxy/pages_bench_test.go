package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/storetest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/valyala/fasthttp"
)

// The pages benchmarks run against a real Gitea (make gitea). Each starts
// one Gitea in its parent benchmark, which testing runs once, and measures
// in sub-benchmarks, which testing runs with growing b.N: a benchmark body
// without sub-benchmarks would start a Gitea for every b.N it tries.

const (
	benchPagesHost  = "alice.pages.test"
	benchPagesOwner = "alice"
	benchPagesRepo  = "pages" // served at / of alice.pages.test, from "main" (no pages branch)
	benchPagesFile  = "index.html"
	benchPagesSize  = 4 << 10
)

// BenchmarkPagesHit serves alice/pages' cached 4 KiB index.html at
// alice.pages.test/ through the whole handler chain, in parallel. The cached
// hit must not ask Gitea: gitea-calls/op is reported and must be 0.
func BenchmarkPagesHit(b *testing.B) {
	gs, body := startBenchPages(b)
	reg := newBenchPagesRegistry(b)
	// An hour of Revalidate and NegativeTTL: no background head check runs
	// while the benchmark does.
	p, g := newBenchPagesProxy(b, gs, sites.Config{Revalidate: time.Hour, NegativeTTL: time.Hour}, reg, reg)

	warm := newCtx(benchPagesHost, "/")
	p.Handler(warm) // fill the cache
	if got := warm.Response.StatusCode(); got != fasthttp.StatusOK {
		b.Fatalf("first request: status %d; want 200", got)
	}
	if !bytes.Equal(warm.Response.Body(), body) {
		b.Fatalf("first request: body of %d bytes; want the %d bytes of %s", len(warm.Response.Body()), len(body), benchPagesFile)
	}

	b.Run("4KiB", func(b *testing.B) {
		calls := g.Calls.Load()
		b.ReportAllocs()
		b.SetBytes(benchPagesSize)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := newCtx(benchPagesHost, "/")
			for pb.Next() {
				ctx.Response.Reset()
				p.Handler(ctx)
				if ctx.Response.StatusCode() != fasthttp.StatusOK {
					b.Fatalf("status %d", ctx.Response.StatusCode())
				}
			}
		})
		b.StopTimer()
		n := g.Calls.Load() - calls
		b.ReportMetric(float64(n)/float64(b.N), "gitea-calls/op")
		if n != 0 {
			b.Fatalf("%d gitea calls during %d cached hits; want 0", n, b.N)
		}
	})
}

// BenchmarkPagesColdMiss measures the first request for alice.pages.test/
// on a proxy that knows nothing yet ("proxy": the head lookup of
// alice/pages, which has no pages branch so it costs three API calls, the
// raw fetch at the commit found, and caching), beside one GET of the same
// file from Gitea's raw endpoint ("raw"). The latency tollgate adds to a
// cold miss is proxy ns/op - raw ns/op.
//
// Each "proxy" iteration builds, with the timer stopped, a new Gitea source
// (and so a new HTTP transport), cache and proxy: the only way to forget a
// head through the API. The request then dials Gitea once; "raw" dials once
// per GET too (no keep-alive), so the difference holds no connection setup.
// The idle connection of each old source stays open until its transport's
// IdleConnTimeout (90s): one per iteration, harmless at benchmark sizes.
func BenchmarkPagesColdMiss(b *testing.B) {
	gs, body := startBenchPages(b)
	reg := newBenchPagesRegistry(b)
	// A proxy subscribed to reg would stay reachable from it after its
	// iteration: each gets the snapshot once instead.
	snap := frozenRegistry{reg.Snapshot()}

	b.Run("proxy", func(b *testing.B) {
		ctx := newCtx(benchPagesHost, "/")
		var calls int64
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			p, g := newBenchPagesProxy(b, gs, sites.Config{}, snap, reg)
			ctx.Response.Reset()
			b.StartTimer()

			p.Handler(ctx)

			b.StopTimer()
			if got := ctx.Response.StatusCode(); got != fasthttp.StatusOK || len(ctx.Response.Body()) != len(body) {
				b.Fatalf("status %d, %d bytes; want 200, %d bytes", got, len(ctx.Response.Body()), len(body))
			}
			calls += g.Calls.Load()
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(float64(calls)/float64(b.N), "gitea-calls/op")
	})

	b.Run("raw", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		req, err := http.NewRequest(http.MethodGet, gs.RawURL(benchPagesOwner, benchPagesRepo, "main", benchPagesFile), nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "token "+gs.Token())
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(body)) {
				b.Fatalf("raw GET: status %d, %d bytes, %v; want 200, %d bytes", resp.StatusCode, n, err, len(body))
			}
		}
	})
}

// startBenchPages runs Gitea with alice/pages holding a 4 KiB index.html on
// its default branch, readable on the raw endpoint, and returns that body.
func startBenchPages(b testing.TB) (*giteatest.Server, []byte) {
	b.Helper()
	gs := giteatest.Start(b)
	gs.CreateUser(b, benchPagesOwner)
	gs.CreateRepo(b, benchPagesOwner, benchPagesRepo)
	body := benchPagesBody()
	gs.PutFile(b, benchPagesOwner, benchPagesRepo, "main", benchPagesFile, body)
	gs.WaitRaw(b, benchPagesOwner, benchPagesRepo, "main", benchPagesFile)
	return gs, body
}

// benchPagesBody is benchPagesSize bytes of HTML.
func benchPagesBody() []byte {
	const line = "<p>tollgate serves this page straight from a Gitea repository.</p>\n"
	b := []byte("<!doctype html>\n<title>alice</title>\n")
	for len(b) < benchPagesSize {
		b = append(b, line...)
	}
	return b[:benchPagesSize]
}

// newBenchPagesRegistry is a registry on a temp bbolt store in which alice's
// org already exists, so no request of a benchmark changes the snapshot (a
// change would empty the proxy's owner cache mid-run).
func newBenchPagesRegistry(b testing.TB) *sites.Registry {
	b.Helper()
	ctx := context.Background()
	st := storetest.Open(b)
	reg, err := sites.New(ctx, st)
	if err != nil {
		b.Fatal(err)
	}
	if err := reg.EnsureGiteaOrg(ctx, benchPagesOwner, sites.FreePlan.Name); err != nil {
		b.Fatal(err)
	}
	return reg
}

// newBenchPagesProxy serves pages.test from a new Gitea source on gs, which
// shares the proxy's new content cache as tollgate serve does; metering off,
// and its own metrics registry (New registers the proxy's metrics).
func newBenchPagesProxy(b testing.TB, gs *giteatest.Server, cfg sites.Config, reg Registry, orgs OrgMaker) (*Proxy, *gitea.Source) {
	b.Helper()
	cfg.GiteaURL, cfg.GiteaToken = gs.URL(), gs.Token()
	cache := content.NewCache(cfg)
	g, err := gitea.New(cache, cfg, gitea.Options{})
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Config{}, Limits{}, Options{
		Registry: reg, Cache: cache, Metrics: prometheus.NewRegistry(),
		Pages: g, PagesDomain: "pages.test", Orgs: orgs,
	})
	if err != nil {
		b.Fatal(err)
	}
	return p, g
}

// frozenRegistry hands out one snapshot and keeps no subscriber.
type frozenRegistry struct{ snap *sites.Snapshot }

func (r frozenRegistry) OnChange(fn func(*sites.Snapshot, *sites.Delta)) { fn(r.snap, nil) }
