//go:build !race

package proxy

import (
	"context"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
)

// TestRateLimitedAllocs: the request-rate limits allocate nothing on the
// request path, whether they serve the request or refuse it (429 with its
// header fields).
func TestRateLimitedAllocs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		limits  Limits
		rps     int64 // acme's plan
		headers []string
		status  int
	}{
		{"org under its rate", Config{}, Limits{}, 1 << 40, nil, fasthttp.StatusOK},
		{"org over its rate", Config{}, Limits{}, 1, nil, fasthttp.StatusTooManyRequests},
		{"client under its rate", Config{}, Limits{PerIPRPS: 1_000_000}, 0, nil, fasthttp.StatusOK},
		{"client over its rate", Config{}, Limits{PerIPRPS: 1, PerIPBurst: 1}, 0, nil, fasthttp.StatusTooManyRequests},
		{"client behind a trusted proxy", Config{TrustedProxies: []string{"127.0.0.1"}}, Limits{PerIPRPS: 1, PerIPBurst: 1}, 0,
			[]string{"X-Forwarded-For", "203.0.113.9, 2001:db8::1"}, fasthttp.StatusTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg, tc.limits)
			_, err := h.reg.PutPlan(context.Background(), sites.Plan{Name: "big", RequestsPerSecond: tc.rps})
			must(t, err)
			ctx := newCtx("www.example", "/4k.bin", tc.headers...)
			h.proxy.Handler(ctx) // fill the cache; takes the one token of a rate of 1
			h.proxy.Handler(ctx)
			allocs := testing.AllocsPerRun(1000, func() {
				ctx.Response.Reset()
				h.proxy.Handler(ctx)
			})
			if got := ctx.Response.StatusCode(); got != tc.status {
				t.Fatalf("status %d; want %d", got, tc.status)
			}
			if allocs != 0 {
				t.Fatalf("%.2f allocations per request; want 0", allocs)
			}
		})
	}
}
