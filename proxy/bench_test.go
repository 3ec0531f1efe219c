package proxy

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkStaticHit serves a cached 4 KiB file through the whole handler
// chain (route, enforce, serve, metrics), in parallel, metering off and on.
// The metered variant charges a metered connection, as the server does.
//
// The enforce=on variant adds billing's gate (allow): its cost is the
// difference to metering=on (the issue asks for under 50 ns and no
// allocation).
func BenchmarkStaticHit(b *testing.B) {
	for _, v := range []struct {
		name             string
		metered, enforce bool
	}{{"metering=off", false, false}, {"metering=on", true, false}, {"metering=on,enforce=on", true, true}} {
		b.Run(v.name, func(b *testing.B) {
			h := newHarnessWith(b, Config{}, Limits{}, func(o *Options) {
				if v.metered {
					o.Usage = newTestMeter(b)
				}
				if v.enforce {
					o.Gates = &fakeGates{}
				}
			})
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
