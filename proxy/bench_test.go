package proxy

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkStaticHit serves a cached 4 KiB file through the whole handler
// chain (route, enforce, serve, metrics), in parallel, metering off and on.
// The metered variant charges a metered connection, as the server does.
func BenchmarkStaticHit(b *testing.B) {
	for _, metered := range []bool{false, true} {
		name := "metering=off"
		if metered {
			name = "metering=on"
		}
		b.Run(name, func(b *testing.B) {
			var usage Usage
			if metered {
				usage = newTestMeter(b)
			}
			h := newHarnessUsage(b, Config{}, Limits{}, usage)
			b.ReportAllocs()
			b.SetBytes(4096)
			b.RunParallel(func(pb *testing.PB) {
				ctx := newCtx("www.example", "/4k.bin")
				server, client := net.Pipe()
				defer server.Close()
				defer client.Close()
				ctx.Init2(&meteredConn{Conn: server}, nil, false)
				ctx.Request.Header.SetHost("www.example")
				ctx.Request.SetRequestURI("/4k.bin")
				for pb.Next() {
					ctx.Response.Reset()
					h.proxy.Handler(ctx)
					if ctx.Response.StatusCode() != fasthttp.StatusOK {
						b.Fatalf("status %d", ctx.Response.StatusCode())
					}
				}
			})
		})
	}
}
