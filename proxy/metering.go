package proxy

import (
	"context"
	"net"
	"sync/atomic"

	"github.com/tollgate-edge/tollgate/meter"
	"golang.org/x/time/rate"
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
	// pace is the org's token bucket while the org is throttled: every
	// write waits for its bytes' tokens, so all the org's responses on this
	// node share the throttle bandwidth (streamed, never buffered).
	pace atomic.Pointer[rate.Limiter]
}

func (c *meteredConn) Write(p []byte) (int, error) {
	if l := c.pace.Load(); l != nil {
		return c.pacedWrite(l, p)
	}
	n, err := c.Conn.Write(p)
	if o := c.owner.Load(); o != nil && n > 0 {
		o.AddEgress(n)
	}
	return n, err
}

// pacedWrite writes p through the bucket, metering each piece.
func (c *meteredConn) pacedWrite(l *rate.Limiter, p []byte) (int, error) {
	return paced(l, p, func(q []byte) (int, error) {
		m, err := c.Conn.Write(q)
		if o := c.owner.Load(); o != nil && m > 0 {
			o.AddEgress(m)
		}
		return m, err
	})
}

// paced writes p with write in pieces no larger than l's bucket, each after
// its tokens are available: the throttle of HTTP/1.1 connections and of h2
// streams alike.
func paced(l *rate.Limiter, p []byte, write func([]byte) (int, error)) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), l.Burst())
		if err := l.WaitN(context.Background(), n); err != nil {
			return written, err
		}
		m, err := write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// metered returns the metering state of a public connection: a plain or a
// TLS connection; nil for anything else (an h2 stream, a test conn).
func metered(c net.Conn) *meteredConn {
	switch mc := c.(type) {
	case *meteredConn:
		return mc
	case *tlsConn:
		return &mc.meteredConn
	}
	return nil
}

// throttle paces the connection's next writes with l (nil: full speed).
func throttle(c net.Conn, l *rate.Limiter) {
	if mc := metered(c); mc != nil {
		mc.pace.Store(l)
	} else if st, ok := c.(*h2Stream); ok {
		st.pace = l
	}
}

// charge makes the connection's next writes count for usage (nil: nobody's,
// e.g. a request for an unknown host).
func charge(c net.Conn, usage *meter.Counters) {
	if mc := metered(c); mc != nil {
		mc.owner.Store(usage)
	} else if st, ok := c.(*h2Stream); ok {
		st.owner = usage
	}
}
