package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Bodies of bufferedBodyBytes or less are read whole before the answer
// starts, larger ones stream; both arrive intact, with their length, and
// the upstream connection goes back to the pool after either (one
// connection for all the requests).
func TestUpstreamBufferedBodies(t *testing.T) {
	srv, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		var n int
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		w.Header().Set("X-Size", fmt.Sprint(n))
		w.Write(pattern(n))
	})
	p := startUpstreamProxy(t, srv.URL, nil)
	for _, n := range []int{0, 1, 1 << 10, bufferedBodyBytes, bufferedBodyBytes + 1, 256 << 10} {
		resp, body := p.do(t, newRequest(t, "GET", fmt.Sprintf("%s/?n=%d", p.url, n), nil))
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, pattern(n)) || resp.ContentLength != int64(n) {
			t.Fatalf("n=%d: status %d, %d bytes, Content-Length %d", n, resp.StatusCode, len(body), resp.ContentLength)
		}
		if got := resp.Header.Get("X-Size"); got != fmt.Sprint(n) {
			t.Errorf("n=%d: X-Size %q: the upstream's headers are not passed on", n, got)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("the upstream saw %d connections for 6 sequential requests; want 1 (pooled after each body)", got)
	}
}

// An upstream that stops or stalls inside a buffered body gets the visitor
// tollgate's 502 or 504 page, never a 200 with a cut body (what a streamed
// body gives, having sent its status first).
func TestUpstreamBufferedBodyCut(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nSet-Cookie: s=1\r\n\r\n"
	for _, tt := range []struct {
		name    string
		answer  func(net.Conn, <-chan struct{})
		timeout time.Duration
		status  int
		err     error
	}{
		{"closes mid-body", func(c net.Conn, _ <-chan struct{}) {
			io.WriteString(c, head+string(pattern(100)))
		}, 0, http.StatusBadGateway, errUpstreamUnavailable},
		{"stalls mid-body", func(c net.Conn, release <-chan struct{}) {
			io.WriteString(c, head+string(pattern(100)))
			<-release
		}, 200 * time.Millisecond, http.StatusGatewayTimeout, errUpstreamTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			target := rawUpstream(t, func(c net.Conn) { tt.answer(c, release) })
			t.Cleanup(func() { close(release) }) // before rawUpstream's cleanup waits for the answer
			p := startUpstreamProxy(t, target, func(c *Config) { c.UpstreamTimeout = tt.timeout })
			resp, page := p.do(t, newRequest(t, "GET", p.url+"/", nil))
			if resp.StatusCode != tt.status || !bytes.Equal(page, defaultPages().status[tt.status].body) {
				t.Errorf("status %d, body %q; want tollgate's %d page", resp.StatusCode, page, tt.status)
			}
			if c := resp.Header.Get("Set-Cookie"); c != "" {
				t.Errorf("the error page carries the upstream's Set-Cookie %q", c)
			}
			if err := p.lastErr(); !errors.Is(err, tt.err) {
				t.Errorf("serve returned %v; want %v", err, tt.err)
			}
		})
	}
}
