package proxy

import (
	"testing"
)

// BenchmarkStaticHit serves a cached 4 KiB file through the whole handler
// chain (route, enforce, serve, metrics), in parallel.
func BenchmarkStaticHit(b *testing.B) {
	h := newHarness(b, Config{}, Limits{})
	b.ReportAllocs()
	b.SetBytes(4096)
	b.RunParallel(func(pb *testing.PB) {
		ctx := newCtx("www.example", "/4k.bin")
		for pb.Next() {
			ctx.Response.Reset()
			h.proxy.Handler(ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d", ctx.Response.StatusCode())
			}
		}
	})
}
