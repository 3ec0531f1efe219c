package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestDecisionReachesResponsesInFlight: a response already being paced
// follows its org's decision as it changes: an upgrade lets the rest go at
// full speed, a block stops it, over HTTP/1.1 and HTTP/2 and in WebSocket
// tunnels, within paceCheck (not at the next request).
func TestDecisionReachesResponsesInFlight(t *testing.T) {
	gates := &fakeGates{}
	ws := newWSUpstream(t)
	h := newHarnessWith(t, Config{}, Limits{}, func(o *Options) { o.Gates = gates })
	ctx := context.Background()
	_, err := h.reg.CreateSite(ctx, sites.Site{ID: "chat", Org: "acme", Source: sites.Source{Type: sites.SourceUpstream, URL: ws.url}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "chat", "chat.example")
	must(t, err)
	c, err := certtest.New(time.Hour, "www.example", "chat.example")
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{c.TLS}, NextProtos: []string{"h2", "http/1.1"}})
	th := &tlsHarness{harness: h, addr: ln.Addr().String(), pool: c.Pool()}
	gate := gates.Gate("acme")
	const slow = 8 << 10 // large.bin (128 KiB) would take 16 s

	// download starts large.bin throttled, changes the decision once the
	// first bytes arrived, and returns how long the rest took and whether
	// the whole file came.
	download := func(t *testing.T, proto string, change access.Decision) (time.Duration, bool) {
		gate.Set(access.Throttle, slow)
		resp, err := th.client(proto).Get("https://www.example/large.bin")
		must(t, err)
		defer resp.Body.Close()
		if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
			t.Fatalf("first bytes: %v", err)
		}
		start := time.Now()
		gate.Set(change, 0)
		n, err := io.Copy(io.Discard, resp.Body)
		return time.Since(start), err == nil && n == 128<<10-1024
	}
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto+" upgrade", func(t *testing.T) {
			took, whole := download(t, proto, access.Allow)
			if !whole || took > 2*time.Second {
				t.Fatalf("after the upgrade: whole %v in %v; want the rest at full speed", whole, took)
			}
		})
		t.Run(proto+" block", func(t *testing.T) {
			took, whole := download(t, proto, access.BlockSuspended)
			if whole || took > 2*time.Second {
				t.Fatalf("after the block: whole %v after %v; want the response cut off at once", whole, took)
			}
		})
	}

	t.Run("websocket block", func(t *testing.T) {
		gate.Set(access.Allow, 0)
		conn, err := tls.Dial("tcp", th.addr, &tls.Config{RootCAs: th.pool, ServerName: "chat.example", NextProtos: []string{"http/1.1"}})
		must(t, err)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		must(t, err)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		must(t, err)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", resp.StatusCode)
		}
		readN(t, br, 5) // "hello"
		start := time.Now()
		gate.Set(access.BlockExpired, 0)
		_, err = br.ReadByte() // the idle tunnel ends: EOF, not the 10 s deadline
		if err == nil || time.Since(start) > 2*time.Second {
			t.Fatalf("tunnel after the block: %v after %v", err, time.Since(start))
		}
	})
}
