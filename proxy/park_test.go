package proxy

import (
	"io"
	"net"
	"testing"
	"time"
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
		{"tcp (peek on the socket)", func(t *testing.T) (net.Listener, func() (net.Conn, error)) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			must(t, err)
			return ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, Limits{IdleTimeout: 2 * time.Second})
			ln, dial := tc.listen(t)
			pl := newParkListener(meteredListener{h.proxy.guard(ln, listenerHTTP)})
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
