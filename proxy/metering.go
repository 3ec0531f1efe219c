package proxy

import (
	"net"
	"sync/atomic"

	"github.com/tollgate-edge/tollgate/meter"
)

// Usage hands out the counters of (org, site). *meter.Meter implements it.
type Usage interface {
	Counters(org, site, kind string) *meter.Counters
}

// Egress is counted where it is exact: on the client connection. Every byte
// written to it (status line, headers, body, and WebSocket frames after an
// upgrade) is charged to the counters of the request being answered, which
// the handler sets when it has routed the request. A client that disconnects
// mid-download is charged what the kernel accepted.
//
// One approximation: with HTTP/1.1 pipelining (several requests sent before
// reading the answers; browsers do not), fasthttp may still hold the tail of
// one answer in its write buffer when it routes the next request; if the two
// requests are for different sites, up to one buffer (4 KiB) moves from the
// first site to the second. The total is exact either way.
type meteredListener struct {
	net.Listener
}

func (l meteredListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &meteredConn{Conn: c}, nil
}

type meteredConn struct {
	net.Conn
	owner atomic.Pointer[meter.Counters]
}

func (c *meteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if o := c.owner.Load(); o != nil && n > 0 {
		o.AddEgress(n)
	}
	return n, err
}

// charge makes the connection's next writes count for usage (nil: nobody's,
// e.g. a request for an unknown host).
func charge(c net.Conn, usage *meter.Counters) {
	switch mc := c.(type) {
	case *meteredConn:
		mc.owner.Store(usage)
	case *tlsConn:
		mc.owner.Store(usage)
	case *h2Stream:
		mc.owner = usage
	}
}
