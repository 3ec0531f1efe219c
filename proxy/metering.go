package proxy

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
	return newMeteredConn(c), nil
}

type meteredConn struct {
	net.Conn
	owner atomic.Pointer[meter.Counters]
	// pace is the org's token bucket while the org is throttled: every
	// write waits for its bytes' tokens, so all the org's responses on this
	// node share the throttle bandwidth (streamed, never buffered).
	pace atomic.Pointer[rate.Limiter]
	// writeDeadline is the last deadline fasthttp set for writes (unix
	// nanoseconds, 0: none); a paced write never waits past it.
	writeDeadline atomic.Int64
	// closed is closed by Close: paced writes stop waiting.
	closed    chan struct{}
	closeOnce sync.Once
	// linger: the connection is closed with request bytes possibly unread;
	// Close reads and discards what still arrives before closing (framing.go).
	linger atomic.Bool
	head   headScanner // bare-LF detection in request heads (framing.go)
}

func newMeteredConn(c net.Conn) *meteredConn {
	mc := &meteredConn{}
	mc.init(c)
	return mc
}

func (c *meteredConn) init(conn net.Conn) {
	c.Conn = conn
	c.closed = make(chan struct{})
	c.head.reset()
}

func (c *meteredConn) Read(p []byte) (int, error) {
	if c.head.bad {
		return 0, errBareLF
	}
	n, err := c.Conn.Read(p)
	if c.head.on && n > 0 {
		c.head.scan(p[:n])
	}
	if err == io.EOF {
		c.head.eof = true
	}
	return n, err
}

func (c *meteredConn) SetWriteDeadline(t time.Time) error {
	c.recordWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *meteredConn) SetDeadline(t time.Time) error {
	c.recordWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *meteredConn) recordWriteDeadline(t time.Time) {
	if t.IsZero() {
		c.writeDeadline.Store(0)
	} else {
		c.writeDeadline.Store(t.UnixNano())
	}
}

// Close closes the connection; one closed with unread request bytes first
// sends its FIN and reads what the client still sends, bounded by
// lingerBytes and lingerTime, so the client reads the last response
// instead of a reset.
func (c *meteredConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	if c.linger.CompareAndSwap(true, false) {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
			_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
		}
	}
	return c.Conn.Close()
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
	return paced(l, p, c.closed, c.deadline(), func(q []byte) (int, error) {
		m, err := c.Conn.Write(q)
		if o := c.owner.Load(); o != nil && m > 0 {
			o.AddEgress(m)
		}
		return m, err
	})
}

// deadline is the write deadline fasthttp set, zero when none.
func (c *meteredConn) deadline() time.Time {
	if ns := c.writeDeadline.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// errPaceDeadline: a paced write would wait past the write deadline.
var errPaceDeadline = timeoutError{"proxy: throttled write would pass the write deadline"}

type timeoutError struct{ msg string }

func (e timeoutError) Error() string { return e.msg }
func (e timeoutError) Timeout() bool { return true }

// Temporary completes net.Error, as os.ErrDeadlineExceeded does.
func (e timeoutError) Temporary() bool { return true }

// paced writes p with write in pieces no larger than l's bucket, each after
// its tokens are available: the throttle of HTTP/1.1 connections and of h2
// streams alike. A wait ends early, with an error, when done is closed (the
// connection or stream ended) or when it would pass deadline (non-zero): a
// stalled or departed client never holds its goroutine longer than its
// write deadline.
func paced(l *rate.Limiter, p []byte, done <-chan struct{}, deadline time.Time, write func([]byte) (int, error)) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), l.Burst())
		if err := waitN(l, n, done, deadline); err != nil {
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

// waitN waits for n tokens of l, at most until done is closed or deadline.
func waitN(l *rate.Limiter, n int, done <-chan struct{}, deadline time.Time) error {
	now := time.Now()
	r := l.ReserveN(now, n)
	if !r.OK() {
		return fmt.Errorf("proxy: %d bytes exceed the throttle's burst", n)
	}
	d := r.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	if !deadline.IsZero() && now.Add(d).After(deadline) {
		r.CancelAt(now)
		return errPaceDeadline
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-done:
		r.Cancel()
		return net.ErrClosed
	}
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
