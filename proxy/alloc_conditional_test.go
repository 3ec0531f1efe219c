//go:build !race

package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestConditionalHitAllocs: preconditions and ranges on a cached file
// allocate nothing either, whether they send the file, a part, 304 or 412.
func TestConditionalHitAllocs(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	for _, tc := range []struct {
		name   string
		ctx    *fasthttp.RequestCtx
		status int
	}{
		{"if-match", newCtx("www.example", "/4k.bin", "If-Match", "*"), 200},
		{"if-match fails", newCtx("www.example", "/4k.bin", "If-Match", `"other"`), 412},
		{"if-unmodified-since fails", newCtx("www.example", "/4k.bin", "If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"), 412},
		{"if-none-match", newCtx("www.example", "/app.js", "Accept-Encoding", "gzip", "If-None-Match", "*"), 304},
		{"range with if-range", newCtx("www.example", "/4k.bin", "Range", "Bytes=-100", "If-Range", "Fri, 01 Jan 2100 00:00:00 GMT"), 200},
		{"range", newCtx("www.example", "/4k.bin", "Range", "bytes=100-99999999999999999999"), 206},
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
