package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkStaticConn serves cached 4 KiB requests through fasthttp's
// HTTP/1.1 connection loop on a metered, parkable connection, one request
// per read as a keep-alive client that waits for each answer sends them:
// framing checks, the head scanner, deadlines, parking's idle marks and the
// metered writes, beside the handler. "304" revalidates with the file's ETag.
func BenchmarkStaticConn(b *testing.B) {
	h := newHarnessWith(b, Config{}, Limits{}, func(o *Options) { o.Usage = newTestMeter(b) })
	get := []byte("GET /4k.bin HTTP/1.1\r\nHost: www.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	etag := benchETag(b, h, get)
	revalidate := []byte("GET /4k.bin HTTP/1.1\r\nHost: www.example\r\nUser-Agent: bench\r\nAccept: */*\r\nIf-None-Match: " + etag + "\r\n\r\n")
	for _, v := range []struct {
		name string
		req  []byte
		want string
	}{{"200", get, "HTTP/1.1 200 "}, {"304", revalidate, "HTTP/1.1 304 "}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			c := &scriptConn{req: v.req, n: b.N}
			mc := newMeteredConn(c)
			mc.park = newParkListener(nil, h.proxy.limits.IdleTimeout)
			mc.outer = mc
			b.ResetTimer()
			if err := h.proxy.server.ServeConn(mc); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if !bytes.HasPrefix(c.last, []byte(v.want)) {
				b.Fatalf("last response %q", c.last)
			}
		})
	}
}

func benchETag(b *testing.B, h *harness, get []byte) string {
	c := &scriptConn{req: get, n: 1}
	if err := h.proxy.server.ServeConn(newMeteredConn(c)); err != nil {
		b.Fatal(err)
	}
	_, rest, ok := bytes.Cut(c.last, []byte("\r\nETag: "))
	if !ok {
		b.Fatalf("no ETag in %q", c.last)
	}
	etag, _, _ := bytes.Cut(rest, []byte("\r\n"))
	return string(etag)
}

// scriptConn is a client connection that sends req n times, each in one
// read after the previous answer, then closes.
type scriptConn struct {
	req  []byte
	n    int
	last []byte // the start of the last write
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, io.EOF
	}
	c.n--
	return copy(p, c.req), nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.last = append(c.last[:0], p[:min(len(p), 512)]...)
	return len(p), nil
}

func (c *scriptConn) Close() error        { return nil }
func (c *scriptConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(t time.Time) error { return nil }
