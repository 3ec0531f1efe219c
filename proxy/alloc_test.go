//go:build !race

package proxy

import (
	"bytes"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/sites"

	"github.com/valyala/fasthttp"
)

// TestStaticHitAllocs holds the hot path to its promise: a cached file, from
// routing through serving and metrics, allocates nothing.
func TestStaticHitAllocs(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	for _, tc := range []struct {
		name    string
		ctx     *fasthttp.RequestCtx
		status  int
		headers []string
	}{
		{"4k", newCtx("www.example", "/4k.bin"), 200, nil},
		{"host with port and case", newCtx("WWW.Example:8080", "/4k.bin"), 200, nil},
		{"gzip", newCtx("www.example", "/app.js", "Accept-Encoding", "gzip, br"), 200, nil},
		{"304", newCtx("www.example", "/about", "If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT"), 304, nil},
		{"range", newCtx("www.example", "/4k.bin", "Range", "bytes=0-99"), 206, nil},
		{"unknown host", newCtx("nobody.example", "/"), 404, nil},
		// Preconditions and ranges send the file, a part, 304 or 412 without allocating either.
		{"if-match", newCtx("www.example", "/4k.bin", "If-Match", "*"), 200, nil},
		{"if-match fails", newCtx("www.example", "/4k.bin", "If-Match", `"other"`), 412, nil},
		{"if-unmodified-since fails", newCtx("www.example", "/4k.bin", "If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"), 412, nil},
		{"if-none-match", newCtx("www.example", "/app.js", "Accept-Encoding", "gzip", "If-None-Match", "*"), 304, nil},
		{"range with if-range", newCtx("www.example", "/4k.bin", "Range", "Bytes=-100", "If-Range", "Fri, 01 Jan 2100 00:00:00 GMT"), 200, nil},
		{"open-ended range", newCtx("www.example", "/4k.bin", "Range", "bytes=100-99999999999999999999"), 206, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.proxy.Handler(tc.ctx) // fill the cache
			if got := tc.ctx.Response.StatusCode(); got != tc.status {
				t.Fatalf("status %d; want %d", got, tc.status)
			}
			allocs := testing.AllocsPerRun(1000, func() {
				tc.ctx.Response.Reset()
				h.proxy.Handler(tc.ctx)
			})
			if allocs != 0 {
				t.Fatalf("%.2f allocations per request; want 0", allocs)
			}
		})
	}
}

func TestMeteredHitAllocs(t *testing.T) {
	st := newTestMeter(t)
	h := newHarnessUsage(t, Config{}, Limits{}, st)
	ctx := newCtx("www.example", "/4k.bin")
	h.proxy.Handler(ctx)
	allocs := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		h.proxy.Handler(ctx)
	})
	if allocs != 0 {
		t.Fatalf("%.2f allocations per metered request; want 0", allocs)
	}
}

// TestEnforcedHitAllocs: billing's gate on the hot path allocates nothing,
// whether it allows or throttles.
func TestEnforcedHitAllocs(t *testing.T) {
	gates := &fakeGates{}
	h := newHarnessWith(t, Config{}, Limits{}, func(o *Options) { o.Usage, o.Gates = newTestMeter(t), gates })
	for _, d := range []access.Decision{access.Allow, access.Throttle, access.BlockQuota} {
		gates.Gate("acme").Set(d, 100_000)
		ctx := newCtx("www.example", "/4k.bin")
		h.proxy.Handler(ctx)
		allocs := testing.AllocsPerRun(1000, func() {
			ctx.Response.Reset()
			h.proxy.Handler(ctx)
		})
		if allocs != 0 {
			t.Fatalf("%v: %.2f allocations per request; want 0", d, allocs)
		}
	}
}

// TestPagesHitAllocs: a Gitea pages file in the cache (a real Gitea behind
// it), from routing through serving and metrics, allocates nothing and asks
// Gitea nothing.
func TestPagesHitAllocs(t *testing.T) {
	gs, body := startBenchPages(t)
	reg := newBenchPagesRegistry(t)
	// An hour of Revalidate and NegativeTTL: no head check runs meanwhile.
	p, g := newBenchPagesProxy(t, gs, sites.Config{Revalidate: time.Hour, NegativeTTL: time.Hour}, reg, reg)
	ctx := newCtx(benchPagesHost, "/")
	p.Handler(ctx) // fill the cache
	if got := ctx.Response.StatusCode(); got != fasthttp.StatusOK || !bytes.Equal(ctx.Response.Body(), body) {
		t.Fatalf("first request: status %d, %d bytes; want 200 and the %d bytes of %s", got, len(ctx.Response.Body()), len(body), benchPagesFile)
	}
	calls := g.Calls.Load()
	allocs := testing.AllocsPerRun(200, func() {
		ctx.Response.Reset()
		p.Handler(ctx)
	})
	if ctx.Response.StatusCode() != fasthttp.StatusOK {
		t.Fatalf("cached hit: status %d", ctx.Response.StatusCode())
	}
	if allocs != 0 {
		t.Errorf("cached pages hit: %.1f allocations per request, want 0", allocs)
	}
	if n := g.Calls.Load() - calls; n != 0 {
		t.Errorf("%d Gitea calls during cached hits, want 0", n)
	}
}
