package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/internal/certtest"
)

// scriptListener returns its script's errors and connections in order, then
// blocks until closed.
type scriptListener struct {
	mu     sync.Mutex
	script []any // error or net.Conn
	closed chan struct{}
	once   sync.Once
}

func newScriptListener(script ...any) *scriptListener {
	return &scriptListener{script: script, closed: make(chan struct{})}
}

func (l *scriptListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.script) == 0 {
		l.mu.Unlock()
		<-l.closed
		return nil, net.ErrClosed
	}
	next := l.script[0]
	l.script = l.script[1:]
	l.mu.Unlock()
	if err, ok := next.(error); ok {
		return nil, err
	}
	return next.(net.Conn), nil
}

func (l *scriptListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *scriptListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// testGuard is a guardListener over ln whose waits are recorded instead of
// slept, logging into a buffer.
type testGuard struct {
	*guardListener
	waits []time.Duration
	log   *bytes.Buffer
	m     listenerMetrics
}

func newTestGuard(t *testing.T, ln net.Listener, cfg guardConfig) *testGuard {
	t.Helper()
	g := &testGuard{log: &bytes.Buffer{}}
	g.m = (&metrics{listeners: newListenerVecs(promauto.With(prometheus.NewRegistry()))}).listener(listenerHTTP)
	if cfg.name == "" {
		cfg.name = listenerHTTP
	}
	if cfg.capacity == 0 {
		cfg.capacity = 1000
	}
	cfg.metrics = g.m
	cfg.log = slog.New(slog.NewJSONHandler(g.log, nil))
	if cfg.wait == nil {
		cfg.wait = func(_ *guardListener, d time.Duration) bool { g.waits = append(g.waits, d); return true }
	}
	g.guardListener = newGuardListener(ln, cfg)
	t.Cleanup(func() { g.Close() })
	return g
}

func TestAcceptRetriesWithBackOff(t *testing.T) {
	ms := time.Millisecond
	emfile := acceptErr(syscall.EMFILE)
	tests := []struct {
		name    string
		errs    []error
		waits   []time.Duration // slept before each retry
		wantErr error           // returned by Accept; nil: the connection after errs
	}{
		{"out of descriptors", []error{emfile, emfile, emfile, emfile}, []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms}, nil},
		{"doubles up to 1s", []error{emfile, emfile, emfile, emfile, emfile, emfile, emfile, emfile, emfile, emfile},
			[]time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second}, nil},
		{"system table full, aborted, no buffers, timeout",
			[]error{acceptErr(syscall.ENFILE), acceptErr(syscall.ECONNABORTED), acceptErr(syscall.ENOBUFS), &net.OpError{Op: "accept", Err: os.ErrDeadlineExceeded}},
			[]time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms}, nil},
		{"broken socket is returned", []error{acceptErr(syscall.EBADF)}, nil, syscall.EBADF},
		{"closed listener is returned", []error{net.ErrClosed}, nil, net.ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer client.Close()
			script := []any{}
			for _, err := range tt.errs {
				script = append(script, err)
			}
			g := newTestGuard(t, newScriptListener(append(script, server)...), guardConfig{})
			c, err := g.Accept()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || c != nil {
					t.Fatalf("Accept = %v, %v; want error %v", c, err, tt.wantErr)
				}
			} else if err != nil || c.(*guardConn).Conn != server {
				t.Fatalf("Accept = %v, %v; want the scripted connection", c, err)
			}
			if fmt.Sprint(g.waits) != fmt.Sprint(tt.waits) {
				t.Errorf("waits %v, want %v", g.waits, tt.waits)
			}
			if got := testutil.ToFloat64(g.m.acceptErrors); got != float64(len(tt.waits)) {
				t.Errorf("tollgate_proxy_accept_errors_total = %v, want %d", got, len(tt.waits))
			}
		})
	}
}

// TestAcceptErrorLogIsRateLimited: a burst of failures is one line, and the
// next line, a second later, counts what happened meanwhile.
func TestAcceptErrorLogIsRateLimited(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	script := []any{}
	for range 50 {
		script = append(script, acceptErr(syscall.EMFILE))
	}
	server, client := net.Pipe()
	defer client.Close()
	var g *testGuard
	g = newTestGuard(t, newScriptListener(append(script, server)...), guardConfig{
		now: func() time.Time { return now },
		wait: func(_ *guardListener, d time.Duration) bool {
			if len(g.waits) == 48 {
				now = now.Add(time.Second) // the 50th failure comes a second after the first
			}
			g.waits = append(g.waits, d)
			return true
		},
	})
	if _, err := g.Accept(); err != nil {
		t.Fatal(err)
	}
	type logLine struct {
		Msg, Listener, Err string
		Failures           int
	}
	var lines []logLine
	dec := json.NewDecoder(g.log)
	for dec.More() {
		var l logLine
		if err := dec.Decode(&l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if len(lines) != 2 || lines[0].Failures != 1 || lines[1].Failures != 49 {
		t.Fatalf("log lines %+v; want 2, counting 1 then 49 failures", lines)
	}
	if lines[0].Msg != "accepting connections fails; retrying" || lines[0].Listener != "http" || !strings.Contains(lines[0].Err, "too many open files") {
		t.Errorf("log line %+v", lines[0])
	}
}

// TestAcceptEvictsUnusedWhenOutOfDescriptors: with no descriptor left, the
// oldest connection that has not sent a byte for a second makes room at once,
// no back-off; a younger one is left alone.
func TestAcceptEvictsUnusedWhenOutOfDescriptors(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0
	s1, c1 := net.Pipe()
	s2, c2 := net.Pipe()
	s3, c3 := net.Pipe()
	s4, c4 := net.Pipe()
	for _, c := range []net.Conn{c1, c2, c3, c4} {
		defer c.Close()
	}
	emfile := acceptErr(syscall.EMFILE)
	g := newTestGuard(t, newScriptListener(s1, s2, emfile, s3, emfile, s4), guardConfig{now: func() time.Time { return now }})
	accept := func() net.Conn {
		t.Helper()
		c, err := g.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	got := []net.Conn{accept(), accept()}

	// Just taken: out of descriptors, the listener backs off.
	now = t0.Add(evictAfter - time.Millisecond)
	got = append(got, accept())
	if got[2].(*guardConn).Conn != s3 || fmt.Sprint(g.waits) != "[5ms]" || testutil.ToFloat64(g.m.evicted) != 0 {
		t.Fatalf("third Accept: %v after waits %v, %v evicted; want the third connection after 5ms, none evicted",
			got[2], g.waits, testutil.ToFloat64(g.m.evicted))
	}
	// A second later the first one is closed to take the fourth at once.
	now = t0.Add(evictAfter)
	got = append(got, accept())
	if got[3].(*guardConn).Conn != s4 || len(g.waits) != 1 {
		t.Fatalf("fourth Accept: %v after waits %v; want the fourth connection at once", got[3], g.waits)
	}
	if _, err := c1.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("evicted connection's peer read: %v, want EOF", err)
	}
	c2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("second connection's peer read: %v, want it still open", err)
	}
	if e, a := testutil.ToFloat64(g.m.evicted), testutil.ToFloat64(g.m.acceptErrors); e != 1 || a != 2 {
		t.Errorf("evicted %v, accept errors %v; want 1 and 2", e, a)
	}
	if open := testutil.ToFloat64(g.m.open); open != 3 {
		t.Errorf("tollgate_proxy_connections = %v, want 3", open)
	}
	for _, c := range got {
		c.Close()
	}
	if open := testutil.ToFloat64(g.m.open); open != 0 {
		t.Errorf("after closing: tollgate_proxy_connections = %v, want 0", open)
	}
}

// TestCloseEndsBackOff: Close wakes an Accept waiting to retry.
func TestCloseEndsBackOff(t *testing.T) {
	waiting := make(chan struct{})
	g := newTestGuard(t, newScriptListener(acceptErr(syscall.EMFILE)), guardConfig{
		wait: func(l *guardListener, _ time.Duration) bool { close(waiting); return l.sleep(time.Hour) },
	})
	done := make(chan error, 1)
	go func() { _, err := g.Accept(); done <- err }()
	<-waiting
	g.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waiting after Close")
	}
}

// TestConnRefusesIOUntilServed: fasthttp sets a deadline before it serves a
// connection; before that, reads and writes fail at once.
func TestConnRefusesIOUntilServed(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	g := newTestGuard(t, newScriptListener(server), guardConfig{})
	c, err := g.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); !errors.Is(err, errNotServed) {
		t.Fatalf("Write before a deadline: %v, want errNotServed", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, errNotServed) {
		t.Fatalf("Read before a deadline: %v, want errNotServed", err)
	}
	must(t, c.SetReadDeadline(time.Now().Add(time.Second)))
	go client.Write([]byte("y"))
	if n, err := c.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("Read after a deadline: %d, %v", n, err)
	}
}

func TestClientKey(t *testing.T) {
	trusted, err := parsePrefixes([]string{"10.0.0.0/8", "2001:db8:ffff::/48"})
	must(t, err)
	l := &guardListener{cfg: guardConfig{trusted: trusted}}
	tests := []struct {
		addr    net.Addr
		key     string // "": not counted
		trusted bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7")}, "192.0.2.7", false},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7")}, "192.0.2.7", false},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6")}, "2001:db8:1:2::", false},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1")}, "2001:db8:1:2::", false},
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3")}, "10.1.2.3", true},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:ffff:1::9")}, "2001:db8:ffff:1::9", true},
		{&net.UnixAddr{Name: "@x", Net: "unix"}, "", false},
	}
	for _, tt := range tests {
		key, trusted := l.clientKey(tt.addr)
		got := ""
		if key.IsValid() {
			got = key.String()
		}
		if got != tt.key || trusted != tt.trusted {
			t.Errorf("clientKey(%v) = %q, %v; want %q, %v", tt.addr, got, trusted, tt.key, tt.trusted)
		}
	}
}

// dialFrom connects to addr from the loopback address src (127.0.0.x).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// readUntilClose reads c until the server closes it (at most 5s).
func readUntilClose(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading until close: %v (read %q)", err, b)
	}
	return string(b)
}

// getOn sends one request for www.example on c and reads the status line.
func getOn(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Status
}

// closedBeforeShutdown waits, at cleanup, until the listener name holds no
// connection: registered after the harness and before dialFrom, it runs
// after the clients closed and before the proxy shuts down, which then has
// no connection left to close under a reader.
func closedBeforeShutdown(t *testing.T, h *harness, name string) {
	t.Cleanup(func() {
		open := h.proxy.metrics.listener(name).open
		pollFor(t, func() bool { return testutil.ToFloat64(open) == 0 })
	})
}

// serveOnTCP serves h's proxy on a loopback TCP listener.
func serveOnTCP(t *testing.T, h *harness) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.Serve(ln)
	return ln.Addr().String()
}

// TestPerIPLimit: past limits.max_conns_per_ip an address gets 429 and a
// closed connection; other addresses are served, and so is the address
// again once one of its connections closed.
func TestPerIPLimit(t *testing.T) {
	h := newHarness(t, Config{}, Limits{MaxConnsPerIP: 2})
	closedBeforeShutdown(t, h, listenerHTTP)
	addr := serveOnTCP(t, h)
	a := dialFrom(t, "127.0.0.1", addr)
	if s := getOn(t, a); s != "200 OK" {
		t.Fatalf("first connection: %s", s)
	}
	dialFrom(t, "127.0.0.1", addr) // idle
	answer := readUntilClose(t, dialFrom(t, "127.0.0.1", addr))
	for _, want := range []string{"HTTP/1.1 429 Too Many Requests\r\n", "\r\nConnection: close\r\n", "\r\nServer: tollgate\r\n", errorPagesText(429)} {
		if !strings.Contains(answer, want) {
			t.Errorf("third connection's answer lacks %q:\n%s", want, answer)
		}
	}
	if s := getOn(t, dialFrom(t, "127.0.0.2", addr)); s != "200 OK" {
		t.Errorf("another address: %s", s)
	}
	a.Close()
	pollFor(t, func() bool {
		c := dialFrom(t, "127.0.0.1", addr)
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: www.example\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == 200
	})
	if got := testutil.ToFloat64(h.proxy.metrics.listeners.refused.WithLabelValues("http", "per_ip")); got < 1 {
		t.Errorf(`tollgate_proxy_connections_refused_total{reason="per_ip"} = %v`, got)
	}
}

// TestPerIPLimitOverTLSKeepsAccepting: a TLS connection past the per-IP cap
// that never speaks is closed without a handshake, and the listener goes on
// accepting. (fasthttp's own cap answered it from its accept loop, where the
// handshake waited for the silent client and no one else was accepted.)
func TestPerIPLimitOverTLSKeepsAccepting(t *testing.T) {
	h := newHarness(t, Config{}, Limits{MaxConnsPerIP: 1})
	closedBeforeShutdown(t, h, listenerHTTPS)
	c, err := certtest.New(time.Hour, "www.example")
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{c.TLS}, NextProtos: []string{"http/1.1"}})
	addr := ln.Addr().String()

	dialFrom(t, "127.0.0.1", addr) // silent, within the cap
	over := dialFrom(t, "127.0.0.1", addr)
	if b := readUntilClose(t, over); b != "" {
		t.Errorf("refused TLS connection got %q; want it closed without a byte", b)
	}
	raw := dialFrom(t, "127.0.0.2", addr)
	tc := tls.Client(raw, &tls.Config{ServerName: "www.example", RootCAs: c.Pool(), NextProtos: []string{"http/1.1"}})
	if s := getOn(t, tc); s != "200 OK" {
		t.Fatalf("another address over TLS: %s", s)
	}
}

// TestTrustedProxiesAreNotCapped: a load balancer's connections carry many
// clients; the per-IP cap does not count them.
func TestTrustedProxiesAreNotCapped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	trusted, err := parsePrefixes([]string{"127.0.0.2"})
	must(t, err)
	g := newTestGuard(t, ln, guardConfig{perIP: 1, trusted: trusted})
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		dialFrom(t, "127.0.0.2", ln.Addr().String())
		select {
		case c := <-accepted:
			defer c.Close()
		case <-time.After(5 * time.Second):
			t.Fatal("a trusted peer's connection was not accepted")
		}
	}
	dialFrom(t, "127.0.0.3", ln.Addr().String())
	c := <-accepted
	defer c.Close()
	if b := readUntilClose(t, dialFrom(t, "127.0.0.3", ln.Addr().String())); !strings.HasPrefix(b, "HTTP/1.1 429 ") {
		t.Errorf("second connection of an untrusted address: %q, want 429", b)
	}
}

// TestCapacityEvictsUnusedConnections: a full listener closes its oldest
// connection that never sent a byte to take a new one, and refuses the new
// one (503) when every connection is in use.
func TestCapacityEvictsUnusedConnections(t *testing.T) {
	h := newHarness(t, Config{}, Limits{Concurrency: 3}) // a listener holds 2
	closedBeforeShutdown(t, h, listenerHTTP)
	addr := serveOnTCP(t, h)
	silent := dialFrom(t, "127.0.0.1", addr)
	busy := dialFrom(t, "127.0.0.1", addr)
	if s := getOn(t, busy); s != "200 OK" {
		t.Fatalf("busy connection: %s", s)
	}
	newcomer := dialFrom(t, "127.0.0.1", addr)
	if s := getOn(t, newcomer); s != "200 OK" {
		t.Fatalf("connection taken at capacity: %s", s)
	}
	if b := readUntilClose(t, silent); b != "" {
		t.Errorf("evicted connection got %q; want it closed without a byte", b)
	}
	answer := readUntilClose(t, dialFrom(t, "127.0.0.1", addr))
	if !strings.HasPrefix(answer, "HTTP/1.1 503 Service Unavailable\r\n") || !strings.Contains(answer, errorPagesText(503)) {
		t.Errorf("connection past capacity with every connection in use: %q, want 503", answer)
	}
	if s := getOn(t, busy); s != "200 OK" {
		t.Errorf("busy connection after the refusal: %s", s)
	}
	lm := h.proxy.metrics.listener(listenerHTTP)
	if e, r := testutil.ToFloat64(lm.evicted), testutil.ToFloat64(lm.refused[refusedCapacity]); e != 1 || r != 1 {
		t.Errorf("evicted %v, refused at capacity %v; want 1 and 1", e, r)
	}
}

func TestCapacity(t *testing.T) {
	tests := []struct{ concurrency, descriptors, want int }{
		{262144, 1 << 20, 262144 - 16384},
		{262144, 20000, 5000},
		{262144, 1024, 256},
		{3, 1 << 20, 2},
		{1, 1 << 20, 1},
		{100, 3, 1},
	}
	for _, tt := range tests {
		if got := capacity(tt.concurrency, tt.descriptors); got != tt.want {
			t.Errorf("capacity(%d, %d) = %d, want %d", tt.concurrency, tt.descriptors, got, tt.want)
		}
	}
}

// TestCloseWriteReachesTCP: meteredConn's lingering close half-closes the
// TCP connection through the guard.
func TestCloseWriteReachesTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	g := newTestGuard(t, ln, guardConfig{})
	client := dialFrom(t, "127.0.0.1", ln.Addr().String())
	c, err := g.Accept()
	must(t, err)
	defer c.Close()
	must(t, c.(*guardConn).CloseWrite())
	if b := readUntilClose(t, client); b != "" {
		t.Fatalf("read %q, want EOF", b)
	}
}

func errorPagesText(status int) string {
	page := string(defaultPages().status[status].body)
	i := strings.Index(page, "<p>")
	return page[i : i+strings.Index(page[i:], "</p>")]
}

// pollFor polls ok for up to 10s.
func pollFor(t testing.TB, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
}
