//go:build !race

package proxy

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestH2StaticHitAllocs: a cached file over HTTP/2 (HEADERS decoded into a
// pooled RequestCtx, Handler, response HEADERS and DATA framed, written)
// allocates nothing per stream once the connection is warm, as browsers'
// repeated requests (fields from the HPACK dynamic table) look.
func TestH2StaticHitAllocs(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	const runs = 1000
	c, mc, frames := newMemH2Conn(t, h.proxy, runs+2)
	var out bytes.Buffer
	mc.w = &out
	mc.r.Reset(frames[0])
	_ = c.loop()

	// The first response, as a client reads it.
	rf := http2.NewFramer(nil, &out)
	rf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	status, body := "", 0
	for {
		f, err := rf.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		case *http2.DataFrame:
			body += len(f.Data())
		}
	}
	if status != "200" || body != 4096 {
		t.Fatalf("first response: status %q, %d body bytes; want 200 and 4096", status, body)
	}

	mc.w = nil
	i := 1
	before := mc.n
	allocs := testing.AllocsPerRun(runs, func() {
		mc.r.Reset(frames[i])
		i++
		_ = c.loop()
	})
	if per := (mc.n - before) / (runs + 1); per < 4096 {
		t.Fatalf("%d bytes written per request; want a 4 KiB response", per)
	}
	if allocs != 0 {
		t.Fatalf("%.2f allocations per h2 stream; want 0", allocs)
	}
	if n := len(c.streams); n != 0 {
		t.Fatalf("%d streams left open", n)
	}
}
