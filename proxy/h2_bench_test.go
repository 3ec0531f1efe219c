package proxy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// BenchmarkH2StaticHit fetches a cached 4 KiB file over HTTP/2 (TLS, one
// connection, parallel streams), client included: compare with the h1
// variant to see what h2 costs.
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

// BenchmarkH2ConnStaticHit is the server's side alone: one h2 connection
// in memory (memConn) reading browser-like GETs of a cached 4 KiB file,
// HEADERS decoded into a pooled RequestCtx, Handler, HEADERS and DATA
// written. No TLS, no client: the CPU the h2 path costs per request.
func BenchmarkH2ConnStaticHit(b *testing.B) {
	h := newHarness(b, Config{}, Limits{})
	const batch = 100
	n := b.N/batch + 2
	c, mc, frames := newMemH2Conn(b, h.proxy, n*batch)
	// Batches of streams in one read, as a browser sends a page's
	// sub-resources: their frames leave in one write.
	batches := make([][]byte, n)
	for i := range batches {
		batches[i] = bytes.Join(frames[i*batch:(i+1)*batch], nil)
	}
	b.ReportAllocs()
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i*batch < b.N; i++ {
		mc.r.Reset(batches[i])
		_ = c.loop()
	}
}

// memConn is a client connection in memory: reads come from r, writes are
// counted (and kept in w when it is set).
type memConn struct {
	net.Conn
	r bytes.Reader
	w *bytes.Buffer
	n int
}

func (c *memConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error) {
	c.n += len(p)
	if c.w != nil {
		c.w.Write(p)
	}
	return len(p), nil
}
func (c *memConn) Close() error                     { return nil }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }

// newMemH2Conn is an h2 connection of p on a memConn after the preface
// and SETTINGS, with frames: n HEADERS frames of GETs of /4k.bin on
// www.example (streams 1, 3, ...; fields indexed after the first), and a
// connection window no response exhausts.
func newMemH2Conn(t testing.TB, p *Proxy, n int) (*h2Conn, *memConn, [][]byte) {
	var in bytes.Buffer
	fr := http2.NewFramer(&in, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	fields := []string{":method", "GET", ":scheme", "https", ":authority", "www.example", ":path", "/4k.bin",
		"user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0", "accept", "*/*", "accept-encoding", "gzip, br"}
	frames := make([][]byte, 0, n)
	for i := range n {
		start := in.Len()
		hb.Reset()
		for j := 0; j < len(fields); j += 2 {
			must(t, enc.WriteField(hpack.HeaderField{Name: fields[j], Value: fields[j+1]}))
		}
		must(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}))
		frames = append(frames, in.Bytes()[start:])
	}
	mc := &memConn{}
	mc.r.Reset([]byte(http2.ClientPreface))
	c := newH2Conn(p, mc)
	must(t, c.handshake())
	c.sendWin = 1 << 40 // no WINDOW_UPDATE to parse
	return c, mc, frames
}
