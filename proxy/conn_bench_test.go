package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
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
			mc.park = newParkListener(nil, h.proxy.limits)
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

// The addresses of the scripted connections: a socket's are kept, not
// made per call.
var (
	serverAddr   net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}
	clientAddr   net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	upstreamAddr net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
)

func (c *scriptConn) Close() error                       { return nil }
func (c *scriptConn) LocalAddr() net.Addr                { return serverAddr }
func (c *scriptConn) RemoteAddr() net.Addr               { return clientAddr }
func (c *scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(t time.Time) error { return nil }

// BenchmarkProxyConn proxies GETs through fasthttp's HTTP/1.1 connection
// loop, as BenchmarkStaticConn serves files, to an upstream that answers
// every request with the same 1 KiB over one in-memory keep-alive
// connection: the proxy's own work per request (request and response
// headers, the pooled upstream connection, streaming the body), without
// the sockets.
func BenchmarkProxyConn(b *testing.B) {
	h := newHarnessWith(b, Config{}, Limits{}, func(o *Options) { o.Usage = newTestMeter(b) })
	ctx := context.Background()
	_, err := h.reg.CreateSite(ctx, sites.Site{ID: "app", Org: "acme", Source: sites.Source{Type: sites.SourceUpstream, URL: "http://upstream.test"}})
	must(b, err)
	_, err = h.reg.AttachDomain(ctx, "app", "app.example")
	must(b, err)
	var r *route
	pollFor(b, func() bool { r = h.proxy.lookup([]byte("app.example")); return r != nil })
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + repeat("u", 1024))
	r.rt.up.dialFunc = func(string, time.Duration) (net.Conn, error) { return &upstreamScript{answer: answer}, nil }

	b.ReportAllocs()
	c := &scriptConn{req: []byte("GET /page?x=1 HTTP/1.1\r\nHost: app.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"), n: b.N}
	mc := newMeteredConn(c)
	mc.park = newParkListener(nil, h.proxy.limits)
	mc.outer = mc
	b.ResetTimer()
	if err := h.proxy.server.ServeConn(mc); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if !bytes.HasPrefix(c.last, []byte("HTTP/1.1 200 ")) {
		b.Fatalf("last response %q", c.last)
	}
}

// upstreamScript is an upstream connection that answers each request
// written to it (a head without a body) with answer.
type upstreamScript struct {
	answer  []byte
	pending []byte
}

func (c *upstreamScript) Write(p []byte) (int, error) {
	if bytes.HasSuffix(p, []byte("\r\n\r\n")) {
		c.pending = c.answer
	}
	return len(p), nil
}

func (c *upstreamScript) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *upstreamScript) Close() error                       { return nil }
func (c *upstreamScript) LocalAddr() net.Addr                { return clientAddr }
func (c *upstreamScript) RemoteAddr() net.Addr               { return upstreamAddr }
func (c *upstreamScript) SetDeadline(t time.Time) error      { return nil }
func (c *upstreamScript) SetReadDeadline(t time.Time) error  { return nil }
func (c *upstreamScript) SetWriteDeadline(t time.Time) error { return nil }
