package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// wsUpstream is an upstream that switches protocols with a minimal
// hand-written handshake, says "hello" in the same packet as its 101 head,
// then echoes every byte until the connection closes.
type wsUpstream struct {
	url    string
	header chan http.Header // the upgrade request's headers
	done   chan struct{}    // closed when the echo has ended
}

func newWSUpstream(t *testing.T) *wsUpstream {
	t.Helper()
	ws := &wsUpstream{header: make(chan http.Header, 1), done: make(chan struct{})}
	srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusUpgradeRequired)
			io.WriteString(w, "websockets only")
			return
		}
		ws.header <- r.Header.Clone()
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer close(ws.done)
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Up: 1\r\n\r\nhello")
		io.Copy(conn, rw) // echo until the proxy closes
	})
	ws.url = srv.URL
	return ws
}

// dialUpgrade opens a raw connection to the proxy and sends an upgrade
// request; it returns the response head and a reader positioned after it.
func dialUpgrade(t *testing.T, p *upstreamProxy, upgrade string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a failure, not a hang
	_, err = io.WriteString(conn, "GET /chat?room=1 HTTP/1.1\r\nHost: tenant.example\r\n"+
		"Connection: keep-alive, Upgrade\r\nUpgrade: "+upgrade+"\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %q: %v", b, err)
	}
	return string(b)
}

func TestWebSocketPassthrough(t *testing.T) {
	ws := newWSUpstream(t)
	p := startUpstreamProxy(t, ws.url, nil)
	conn, br, resp := dialUpgrade(t, p, "websocket")

	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d; want 101", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Connection":           "Upgrade",
		"Upgrade":              "websocket",
		"Sec-Websocket-Accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
		"X-Up":                 "1",
	} {
		if got := resp.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s %q; want %q", k, got, want)
		}
	}
	// The upstream's first bytes came in the same packet as its head, and
	// the proxy wrote exactly one head: what follows it is "hello".
	if got := readN(t, br, 5); got != "hello" {
		t.Fatalf("first bytes %q; want hello", got)
	}
	for _, msg := range []string{"ping", strings.Repeat("x", 100<<10), "bye"} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, br, len(msg)); got != msg {
			t.Fatalf("echo of %d bytes differs", len(msg))
		}
	}

	h := <-ws.header
	for k, want := range map[string]string{
		"Connection":            "Upgrade",
		"Upgrade":               "websocket",
		"Sec-Websocket-Key":     "dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-Websocket-Version": "13",
		"X-Forwarded-For":       "127.0.0.1",
	} {
		if got := h.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("upstream got %s %q; want %q", k, got, want)
		}
	}

	// The client hangs up: the tunnel closes the upstream side too.
	conn.Close()
	<-ws.done
	waitNoTunnels(t, p.u)
	if err := p.lastErr(); err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestWebSocketClosedWithUpstream(t *testing.T) {
	ws := newWSUpstream(t)
	p := startUpstreamProxy(t, ws.url, nil)
	_, br, resp := dialUpgrade(t, p, "websocket")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d; want 101", resp.StatusCode)
	}
	readN(t, br, 5)
	p.u.close() // ends open tunnels
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Fatalf("after close: %q, %v; want EOF", b, err)
	}
	<-ws.done
	waitNoTunnels(t, p.u)
}

func TestWebSocketRefused(t *testing.T) {
	t.Run("non-101 answer relayed", func(t *testing.T) {
		ws := newWSUpstream(t)
		p := startUpstreamProxy(t, ws.url, nil)
		_, _, resp := dialUpgrade(t, p, "tcp-over-magic")
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusUpgradeRequired || string(body) != "websockets only" {
			t.Fatalf("status %d, body %q; want the upstream's 426", resp.StatusCode, body)
		}
		if err := p.lastErr(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Run("upstream down", func(t *testing.T) {
		p := startUpstreamProxy(t, closedPort(t), nil)
		_, _, resp := dialUpgrade(t, p, "websocket")
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d; want 502", resp.StatusCode)
		}
		if err := p.lastErr(); err == nil {
			t.Error("serve returned nil")
		}
	})
}

// waitNoTunnels polls until u has no open tunnel left.
func waitNoTunnels(t *testing.T, u *upstream) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		u.mu.Lock()
		n := len(u.tunnels)
		u.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnels still open", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWebSocketThroughProxy runs a tunnel through the whole public path
// (Handler, the metered connection): the tunnel's bytes are not request
// heads, so line feeds without a carriage return pass untouched.
func TestWebSocketThroughProxy(t *testing.T) {
	ws := newWSUpstream(t)
	h := newHarness(t, Config{}, Limits{})
	ctx := context.Background()
	_, err := h.reg.CreateSite(ctx, sites.Site{ID: "chat", Org: "acme", Source: sites.Source{Type: sites.SourceUpstream, URL: ws.url}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "chat", "chat.example")
	must(t, err)
	conn, err := h.ln.Dial()
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a failure, not a hang
	_, err = io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	must(t, err)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	must(t, err)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d; want 101", resp.StatusCode)
	}
	if got := readN(t, br, 5); got != "hello" {
		t.Fatalf("first bytes %q; want hello", got)
	}
	for _, msg := range []string{"a\nb", "\n\n\n", "x\r\n\r\ny\n"} {
		_, err := io.WriteString(conn, msg)
		must(t, err)
		if got := readN(t, br, len(msg)); got != msg {
			t.Fatalf("echo %q; want %q", got, msg)
		}
	}
}
