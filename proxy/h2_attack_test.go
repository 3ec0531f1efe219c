package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Each test here attacks one of the h2 protections (h2.go) over a raw TLS
// connection and checks that the connection ends, or the stream is
// refused, with the code RFC 9113 names, within the configured bound, or
// that the memory the attack makes the server hold stays within it.

// newTLSHarnessLimits is a tlsHarness (www.example only) with limits.
func newTLSHarnessLimits(t *testing.T, limits Limits) *tlsHarness {
	t.Helper()
	return newTLSHarnessWith(t, limits, func(*Options) {})
}

// newTLSHarnessWith is newTLSHarnessLimits with options set by opt, and a
// certificate for app.example too.
func newTLSHarnessWith(t *testing.T, limits Limits, opt func(*Options)) *tlsHarness {
	t.Helper()
	h := newHarnessWith(t, Config{}, limits, opt)
	c, err := certtest.New(time.Hour, "www.example", "app.example")
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{c.TLS}, NextProtos: []string{"h2", "http/1.1"}})
	return &tlsHarness{harness: h, addr: ln.Addr().String(), pool: c.Pool()}
}

// get sends a GET of path with END_STREAM on a new stream.
func (c *h2RawConn) get(path string) uint32 {
	id := c.stream()
	b := c.blockPath("GET", path)
	must(c.t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndStream: true, EndHeaders: true}))
	return id
}

func (c *h2RawConn) blockPath(method, path string, extra ...string) []byte {
	c.buf.Reset()
	fields := append([]string{":method", method, ":scheme", "https", ":path", path, ":authority", "www.example"}, extra...)
	for i := 0; i < len(fields); i += 2 {
		must(c.t, c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}))
	}
	return bytes.Clone(c.buf.Bytes())
}

// TestH2RapidReset (CVE-2023-44487): a client that opens streams and resets
// them at once, past h2_max_resets per second, gets GOAWAY
// ENHANCE_YOUR_CALM and the connection ends.
func TestH2RapidReset(t *testing.T) {
	h := newTLSHarnessLimits(t, Limits{H2MaxResets: 20})
	c := dialH2Raw(t, h)
	for range 200 {
		id := c.get("/4k.bin")
		if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break // the server has closed the connection
		}
	}
	if code := c.goAway(); code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
}

// TestH2ContinuationFlood (CVE-2024-27316): a header block that never ends
// is read no further than about twice max_header_bytes: GOAWAY
// ENHANCE_YOUR_CALM, and the handler never runs.
func TestH2ContinuationFlood(t *testing.T) {
	h := newTLSHarnessLimits(t, Limits{})
	c := dialH2Raw(t, h)
	before := testutil.ToFloat64(h.proxy.metrics.h2Requests)
	b := c.block("GET")
	must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b}))
	// Literal fields, never indexed, 16 KiB per frame: without a cap the
	// server would read (and decode) all 64 MiB.
	var frag []byte
	for len(frag) < 16000 {
		frag = append(frag, 0x10, 0x01, 'x', 0x01, 'y') // x: y, literal never indexed
	}
	sent := 0
	for range 4096 {
		if err := c.fr.WriteContinuation(1, false, frag); err != nil {
			break
		}
		sent += len(frag)
	}
	if code := c.goAway(); code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
	if sent > 32<<20 {
		t.Fatalf("the server read %d bytes of one header block", sent)
	}
	if n := testutil.ToFloat64(h.proxy.metrics.h2Requests) - before; n != 0 {
		t.Fatalf("the handler saw %v requests", n)
	}
}

// TestH2HPACKBomb: a small block that decodes to a huge header list (one
// large dynamic-table entry referenced over and over) gets 431, its fields
// are never stored, and the connection serves the next request.
func TestH2HPACKBomb(t *testing.T) {
	h := newTLSHarnessLimits(t, Limits{})
	c := dialH2Raw(t, h)
	c.t = t
	var blk bytes.Buffer
	enc := hpack.NewEncoder(&blk)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/4k.bin"}, {":authority", "www.example"}, {"x-bomb", strings.Repeat("b", 3000)}} {
		must(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	// x-bomb is dynamic-table entry 62 (index 1 of the dynamic table):
	// 0xbe is an indexed field of 1 byte that decodes to ~3 KB.
	block := append(blk.Bytes(), bytes.Repeat([]byte{0xbe}, 4000)...) // ~12 MB decoded
	id := c.stream()
	must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}))
	if got := c.answer(id); got != (h2Answer{status: 431}) {
		t.Fatalf("HPACK bomb: %v, want response 431", got)
	}
	// The server's table still holds x-bomb, in step with enc; a request
	// of literals never indexed leaves both as they are.
	id = c.stream()
	must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: literalBlock(t, "/4k.bin"), EndStream: true, EndHeaders: true}))
	if got := c.answer(id); got != (h2Answer{status: 200}) {
		t.Fatalf("after the bomb: %v, want 200", got)
	}
}

// literalBlock encodes a GET of path without touching any dynamic table.
func literalBlock(t *testing.T, path string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", path}, {":authority", "www.example"}} {
		must(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true}))
	}
	return b.Bytes()
}

// TestH2ControlFloods: SETTINGS, PING and empty DATA frames past
// h2_max_control_frames per second end the connection with GOAWAY
// ENHANCE_YOUR_CALM, before the server queues an answer to each.
func TestH2ControlFloods(t *testing.T) {
	h := newTLSHarnessLimits(t, Limits{H2MaxControlFrames: 50})
	for _, tc := range []struct {
		name string
		send func(c *h2RawConn) error
	}{
		{"SETTINGS", func(c *h2RawConn) error {
			return c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		}},
		{"PING", func(c *h2RawConn) error { return c.fr.WritePing(false, [8]byte{1}) }},
		{"empty DATA", func(c *h2RawConn) error { return c.fr.WriteData(1, false, nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialH2Raw(t, h)
			c.t = t
			// An open stream with a body to come, for the DATA frames.
			must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.block("POST"), EndHeaders: true}))
			for range 10000 {
				if tc.send(c) != nil {
					break
				}
			}
			if code := c.goAway(); code != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
			}
		})
	}
}

// TestH2ZeroWindowStall: a client that never opens its flow-control window
// holds its responses (one on the loop, one on a worker) no longer than
// h2_stall_timeout: then GOAWAY FLOW_CONTROL_ERROR, the connection ends and
// the worker is free.
func TestH2ZeroWindowStall(t *testing.T) {
	const stall = 300 * time.Millisecond
	h := newTLSHarnessLimits(t, Limits{H2StallTimeout: stall})
	c := dialH2Raw(t, h)
	must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
	start := time.Now()
	c.get("/4k.bin")    // cached: waits on the loop
	c.get("/large.bin") // streamed: waits on a worker
	if code := c.goAway(); code != http2.ErrCodeFlowControl {
		t.Fatalf("GOAWAY %v, want FLOW_CONTROL_ERROR", code)
	}
	if took := time.Since(start); took < stall || took > stall+5*time.Second {
		t.Fatalf("closed after %v; want about %v", took, stall)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(h.proxy.h2.workers) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still busy after the connection ended", len(h.proxy.h2.workers))
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// TestH2StreamCap: past h2_max_streams open streams a new one is refused
// (RST_STREAM REFUSED_STREAM) and the connection stays up; the cap is
// advertised in SETTINGS_MAX_CONCURRENT_STREAMS.
func TestH2StreamCap(t *testing.T) {
	h := newTLSHarnessLimits(t, Limits{H2MaxStreams: 2})
	c := dialH2Raw(t, h)
	c.t = t
	// Two streams whose bodies never come: they stay open.
	for range 2 {
		must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: c.stream(), BlockFragment: c.block("POST"), EndHeaders: true}))
	}
	id := c.get("/4k.bin")
	if got := c.answer(id); got != (h2Answer{rst: true, code: http2.ErrCodeRefusedStream}) {
		t.Fatalf("third stream: %v, want RST_STREAM REFUSED_STREAM", got)
	}
	if got := c.settings[http2.SettingMaxConcurrentStreams]; got != 2 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 2", got)
	}
}

// TestH2Timeouts: a connection that sends no preface ends after
// read_timeout; one that stays idle after its last stream ends after
// idle_timeout with GOAWAY NO_ERROR.
func TestH2Timeouts(t *testing.T) {
	const d = 300 * time.Millisecond
	h := newTLSHarnessLimits(t, Limits{ReadTimeout: d, IdleTimeout: d})
	t.Run("handshake", func(t *testing.T) {
		conn, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: h.pool, ServerName: "www.example", NextProtos: []string{"h2"}})
		must(t, err)
		defer conn.Close()
		start := time.Now()
		must(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		_, err = io.ReadAll(conn)
		if took := time.Since(start); errors.Is(err, errDeadline) || took > d+5*time.Second {
			t.Fatalf("without a preface: closed after %v (%v); want about %v", took, err, d)
		}
	})
	t.Run("idle", func(t *testing.T) {
		c := dialH2Raw(t, h)
		c.t = t
		id := c.get("/4k.bin")
		if got := c.answer(id); got.status != 200 {
			t.Fatalf("%v", got)
		}
		start := time.Now()
		if code := c.goAway(); code != http2.ErrCodeNo {
			t.Fatalf("GOAWAY %v, want NO_ERROR", code)
		}
		if took := time.Since(start); took > d+5*time.Second {
			t.Fatalf("idle connection closed after %v; want about %v", took, d)
		}
	})
}

var errDeadline = errors.New("deadline")

// TestH2ShutdownFinishesStreams: Proxy.Shutdown sends GOAWAY NO_ERROR
// naming the last stream; a stream already in flight (an upstream that
// answers late) still gets its whole response, then the connection ends
// and Shutdown returns.
func TestH2ShutdownFinishesStreams(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "late answer")
	}))
	t.Cleanup(up.Close)
	h := newTLSHarness(t, up.URL)
	c := dialH2RawName(t, h, "app.example")
	c.t = t
	c.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {":authority", "app.example"}} {
		must(t, c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	id := c.stream()
	must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true}))
	// The stream is on a worker, waiting for the upstream.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.proxy.h2.workers) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream never reached a worker")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- h.proxy.Shutdown(ctx)
	}()
	must(t, c.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	var status string
	var body []byte
	sawGoAway := false
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo || f.LastStreamID != id {
				t.Fatalf("GOAWAY %v last stream %d; want NO_ERROR, %d", f.ErrCode, f.LastStreamID, id)
			}
			sawGoAway = true
			close(release) // now the upstream answers
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		case *http2.DataFrame:
			body = append(body, f.Data()...)
		}
	}
	if !sawGoAway || status != "200" || string(body) != "late answer" {
		t.Fatalf("GOAWAY %v, status %q, body %q; want GOAWAY, then 200 with the whole body", sawGoAway, status, body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown still waits after the last h2 stream ended")
	}
}

// TestH2ConnMemoryCap: however a client plays its windows, what one
// connection makes the server hold for its responses stays within
// h2_conn_buffer plus a fixed cost per stream, and the server keeps
// answering other clients meanwhile. Each attacking connection opens
// h2_max_streams streams with its windows shut
// (SETTINGS_INITIAL_WINDOW_SIZE 0), then
//   - "cached, windows opened, never read": asks for a file held in the
//     cache, opens every window to 2^31-1 and never reads its socket: the
//     server writes until the socket is full and must not copy the bodies
//     into its write buffer beyond that;
//   - "upstream, windows shut": asks for a large upstream response and
//     keeps the window shut: each stream's worker holds its upstream
//     connection's buffers and one copy buffer, and reads the upstream no
//     further.
//
// The heap in use is measured after a collection once every attacking
// connection is stuck (goroutine stacks are not in it).
func TestH2ConnMemoryCap(t *testing.T) {
	const (
		conns     = 4
		cached    = 512 << 10 // a file the cache holds: 100 streams × 512 KiB = 50 MiB a connection if copied
		perStream = 64 << 10  // what a waiting stream may hold: RequestCtx, upstream buffers, copy buffer
		slack     = 16 << 20
	)
	limits := Limits{H2StallTimeout: time.Minute}
	h := newTLSHarnessWith(t, limits, func(o *Options) {
		o.Cache = content.NewCache(sites.Config{MaxCachedFile: 1 << 20})
	})
	must(t, os.WriteFile(filepath.Join(h.root, "cached.bin"), bytes.Repeat([]byte{'c'}, cached), 0o644))
	big := bytes.Repeat([]byte{'u'}, 8<<20)
	up := rawUpstream(t, func(c net.Conn) {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(big))
		c.Write(big) // blocks once the proxy stops reading
	})
	ctx := context.Background()
	_, err := h.reg.CreateSite(ctx, sites.Site{ID: "app", Org: "acme", Source: sites.Source{Type: sites.SourceUpstream, URL: up}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "app", "app.example")
	must(t, err)
	l := h.proxy.limits

	tests := []struct {
		name      string
		authority string
		path      string
		open      bool        // open every window after the requests
		stuck     func() bool // every attacking connection holds all it will
	}{
		{"cached, windows opened, never read", "www.example", "/cached.bin", true, func() bool {
			return h2LoopsWriting() >= conns
		}},
		{"upstream, windows shut", "app.example", "/big", false, func() bool {
			return h2StreamsWaiting(h.proxy) >= conns*l.H2MaxStreams
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := heapInUse()
			var attackers []*h2RawConn
			for range conns {
				c := dialH2RawName(t, h, tc.authority)
				c.t = t
				must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
				for range l.H2MaxStreams {
					c.buf.Reset()
					for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", tc.path}, {":authority", tc.authority}} {
						must(t, c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
					}
					must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: c.stream(), BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true}))
				}
				if tc.open {
					must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}))
					must(t, c.fr.WriteWindowUpdate(0, 1<<31-1-65535))
				}
				attackers = append(attackers, c)
			}
			deadline := time.Now().Add(20 * time.Second)
			for !tc.stuck() {
				if time.Now().After(deadline) {
					t.Fatalf("the attack never took hold: %d loops writing, %d streams waiting", h2LoopsWriting(), h2StreamsWaiting(h.proxy))
				}
				time.Sleep(20 * time.Millisecond) // polling interval
			}
			grown := heapInUse() - base
			bound := int64(conns*(l.H2ConnBuffer+l.H2MaxStreams*perStream) + slack)
			t.Logf("%d connections × %d streams: heap grew %.1f MiB (bound %.1f MiB)", conns, l.H2MaxStreams, float64(grown)/(1<<20), float64(bound)/(1<<20))
			if grown > bound {
				t.Errorf("heap grew %d bytes, more than %d", grown, bound)
			}

			// Another client is served meanwhile, from the loop and from a worker.
			client := h.client("h2")
			client.Timeout = 10 * time.Second
			for _, u := range []string{"https://www.example/4k.bin", "https://www.example/large.bin"} {
				resp, err := client.Get(u)
				must(t, err)
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				must(t, err)
				if resp.StatusCode != 200 || n == 0 {
					t.Fatalf("%s during the attack: %d, %d bytes", u, resp.StatusCode, n)
				}
			}
			client.CloseIdleConnections()
			for _, c := range attackers {
				c.conn.Close()
			}
			deadline = time.Now().Add(10 * time.Second)
			for h2ConnCount(h.proxy) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d h2 connections still open after the attackers left", h2ConnCount(h.proxy))
				}
				time.Sleep(20 * time.Millisecond) // polling interval
			}
		})
	}
}

// heapInUse is the heap in use after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// h2LoopsWriting counts the h2 connection loops blocked writing to a
// client whose socket is full.
func h2LoopsWriting() int {
	buf := make([]byte, 8<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "(*h2Conn).loop") && strings.Contains(g, "(*h2Conn).flushLocked") &&
			strings.Contains(g, "waitWrite") {
			n++
		}
	}
	return n
}

// h2StreamsWaiting counts the worker streams waiting for window.
func h2StreamsWaiting(p *Proxy) int {
	p.h2.mu.Lock()
	defer p.h2.mu.Unlock()
	n := 0
	for c := range p.h2.conns {
		c.mu.Lock()
		n += c.waiting
		c.mu.Unlock()
	}
	return n
}

func h2ConnCount(p *Proxy) int {
	p.h2.mu.Lock()
	defer p.h2.mu.Unlock()
	return len(p.h2.conns)
}
