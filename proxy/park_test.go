package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

func (l *parkListener) parkedConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.parked)
}

// TestParkedConnectionServesNextRequest: a keep-alive connection silent past
// parkAfter is parked (fasthttp let go of it) and its next request is served
// on the same connection; past limits.idle_timeout a parked connection
// closes, and closing the listener closes the parked ones.
func TestParkedConnectionServesNextRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen func(t *testing.T) (net.Listener, func() (net.Conn, error))
	}{
		{"tcp (the poller watches the socket)", func(t *testing.T) (net.Listener, func() (net.Conn, error)) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			must(t, err)
			return ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }
		}},
		{"in memory (a goroutine reads the first byte)", func(t *testing.T) (net.Listener, func() (net.Conn, error)) {
			ln := fasthttputil.NewInmemoryListener()
			return ln, ln.Dial
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, Limits{IdleTimeout: 2 * time.Second})
			ln, dial := tc.listen(t)
			pl := newParkListener(meteredListener{h.proxy.guard(ln, listenerHTTP)}, h.proxy.limits)
			go h.proxy.server.Serve(pl)
			c, err := dial()
			must(t, err)
			defer c.Close()
			for i := range 3 {
				if s := getOn(t, c); s != "200 OK" {
					t.Fatalf("request %d: %s", i+1, s)
				}
				pollFor(t, func() bool { return pl.parkedConns() == 1 })
			}
			// The keep-alive deadline passes while parked: the connection closes.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("after limits.idle_timeout: read %d, %v; want the connection closed", n, err)
			}
			pollFor(t, func() bool { return pl.parkedConns() == 0 })

			d, err := dial()
			must(t, err)
			defer d.Close()
			if s := getOn(t, d); s != "200 OK" {
				t.Fatal(s)
			}
			pollFor(t, func() bool { return pl.parkedConns() == 1 })
			pl.Close()
			d.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := d.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Fatalf("after the listener closed: read %d, %v; want the parked connection closed", n, err)
			}
		})
	}
}

// TestParkedConnectionsHoldNoGoroutine: parked connections wait on the
// listener's poller, not on a goroutine (and its stack) each; a client that
// leaves while parked is closed and forgotten; one that speaks is served.
func TestParkedConnectionsHoldNoGoroutine(t *testing.T) {
	pl, ln := startParked(t, Limits{IdleTimeout: time.Minute})
	before := runtime.NumGoroutine()
	const n = 300
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		must(t, err)
		defer c.Close()
		if s := getOn(t, c); s != "200 OK" {
			t.Fatalf("connection %d: %s", i, s)
		}
		conns[i] = c
	}
	pollFor(t, func() bool { return pl.parkedConns() == n })
	// fasthttp's idle workers exit after MaxIdleWorkerDuration (server.go).
	pollFor(t, func() bool { return runtime.NumGoroutine()-before < n/10 })

	for _, c := range conns[:n/2] {
		c.Close()
	}
	pollFor(t, func() bool { return pl.parkedConns() == n-n/2 })
	for i, c := range conns[n/2:] {
		if s := getOn(t, c); s != "200 OK" {
			t.Fatalf("parked connection %d: %s", n/2+i, s)
		}
	}
	pollFor(t, func() bool { return pl.parkedConns() == n-n/2 })
}

// TestReadTimeoutOnKeepAlive: a request that begins on a kept-alive
// connection and stalls mid-head gets limits.read_timeout, not the parking
// wait, even though the server sets that deadline only when a read needs it
// (meteredConn.lazyRead).
func TestReadTimeoutOnKeepAlive(t *testing.T) {
	const readTimeout = 400 * time.Millisecond
	_, ln := startParked(t, Limits{ReadTimeout: readTimeout, IdleTimeout: 5 * time.Second})
	c, err := net.Dial("tcp", ln.Addr().String())
	must(t, err)
	defer c.Close()
	for i := range 2 {
		if s := getOn(t, c); s != "200 OK" {
			t.Fatalf("request %d: %s", i+1, s)
		}
	}
	start := time.Now()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	elapsed := time.Since(start)
	if err == nil && resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled head: %s, want 408", resp.Status)
	}
	if elapsed < readTimeout*3/4 || elapsed > 4*time.Second {
		t.Errorf("stalled head answered after %v, want about limits.read_timeout (%v)", elapsed, readTimeout)
	}
}

// TestReadDeadlineAfterShutdownClose: fasthttp's Shutdown closes the
// connections it sees idle from its own goroutine. When the connection's
// goroutine has meanwhile read the next request, the read deadline it sets
// next (kept for the next read, meteredConn.lazyRead) fails as the socket's
// would, so fasthttp drops the request instead of serving and counting it
// on a connection that can no longer answer (the client retries it).
func TestReadDeadlineAfterShutdownClose(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	mc := newMeteredConn(a)
	mc.park = &parkListener{}
	connState(mc, fasthttp.StateActive)
	if err := mc.SetReadDeadline(time.Now().Add(time.Second)); err != nil || !mc.readPending {
		t.Fatalf("open connection: %v, pending %v; want the deadline kept for the next read", err, mc.readPending)
	}
	mc.readPending = false
	done := make(chan struct{})
	go func() { mc.Close(); close(done) }() // as fasthttp's closeIdleConns does
	<-done
	if err := mc.SetReadDeadline(time.Now().Add(time.Second)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed connection: SetReadDeadline = %v, want net.ErrClosed", err)
	}
}

// TestPollerWaitsInTheNetpoller: the poller's goroutine waits for parked
// sockets in Go's netpoller, never in a blocking epoll_wait, which would
// hold its processor until sysmon took it back (up to 10 ms): with
// GOMAXPROCS 1 every connection stalled that long (make bench's static row:
// p99 20 ms, the core 78 % busy).
func TestPollerWaitsInTheNetpoller(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux's")
	}
	pl, ln := startParked(t, Limits{IdleTimeout: time.Minute})
	c, err := net.Dial("tcp", ln.Addr().String())
	must(t, err)
	defer c.Close()
	if s := getOn(t, c); s != "200 OK" {
		t.Fatal(s)
	}
	pollFor(t, func() bool { return pl.parkedConns() == 1 })
	// The goroutine may be running for a moment: look a few times.
	var stack string
	for range 50 {
		buf := make([]byte, 1<<20)
		all := string(buf[:runtime.Stack(buf, true)])
		for g := range strings.SplitSeq(all, "\n\n") {
			if strings.Contains(g, "(*poller).loop") {
				stack = g
			}
		}
		if strings.Contains(stack, "runtime_pollWait") {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
	t.Fatalf("the poller does not wait in the netpoller:\n%s", stack)
}

// startParked serves the harness's sites over loopback TCP with limits, its
// idle connections parked.
func startParked(t *testing.T, limits Limits) (*parkListener, net.Listener) {
	t.Helper()
	h := newHarness(t, Config{}, limits)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	pl := newParkListener(meteredListener{h.proxy.guard(ln, listenerHTTP)}, h.proxy.limits)
	go h.proxy.server.Serve(pl)
	t.Cleanup(func() { pl.Close() })
	return pl, ln
}
