package proxy

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkH2StaticHit fetches a cached 4 KiB file over HTTP/2 (TLS, one
// connection, parallel streams), client included: compare with the h1
// variant to see what the h2 bridge costs.
func BenchmarkH2StaticHit(b *testing.B) {
	for _, proto := range []string{"h1", "h2"} {
		b.Run(proto, func(b *testing.B) {
			h := newTLSHarness(b, "http://127.0.0.1:1")
			c := h.client(proto)
			b.ReportAllocs()
			b.SetBytes(4096)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get("https://www.example/4k.bin")
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}
