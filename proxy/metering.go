package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
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
// mid-download (a write fails, or the peer has reset the connection when it
// closes) is charged no more than its kernel acknowledged: on Linux the
// bytes the kernel accepted but the peer never acknowledged (TCP_INFO
// tcpi_bytes_acked; over TLS their plaintext share) are taken back from the
// response being written (settle). Completed responses are never adjusted.
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
	// gate is the enforcement gate of the org whose response (or tunnel) is
	// being written, nil when there is none. Every write reads its current
	// decision: throttled, it waits for its bytes' tokens, so all the org's
	// responses on this node share the throttle bandwidth (streamed, never
	// buffered); allowed again (an upgrade), it goes at full speed; blocked,
	// it fails and the connection closes. A change reaches responses
	// already in flight at their next piece (paced).
	gate atomic.Pointer[access.Gate]
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

	// For settle: plaintext bytes written (all responses), bytes charged to
	// the current owner, raw bytes under TLS (nil for plain connections).
	sent    atomic.Int64
	charged atomic.Int64
	raw     *rawCounter
	settled atomic.Bool

	// Parking between requests (park.go). park is the listener that takes
	// the connection back, outer the connection it accepted (this one or
	// the tlsConn around it). The rest belongs to the goroutine serving or
	// parking the connection: idle is set between requests (connState),
	// idleUntil is the keep-alive deadline fasthttp set, first the byte
	// read while parked that the next Read gives back (hasFirst). parking
	// says the idle read ended to park; it is atomic because fasthttp's
	// Shutdown closes idle connections from its own goroutine while their
	// read may be ending, and exactly one Close parks.
	park      *parkListener
	outer     net.Conn
	idle      bool
	parking   atomic.Bool
	hasFirst  bool
	first     [1]byte
	idleUntil time.Time

	// Deadlines (deadline.go). lazyRead: while the HTTP/1.1 loop serves a
	// request, a read deadline is kept (readDeadline, readPending) for the
	// next Read to set. rdSet, wdSet: the read and write deadlines last set
	// on the socket (unix nanoseconds; 0: none, or not known).
	lazyRead     bool
	readPending  bool
	readDeadline time.Time
	rdSet, wdSet atomic.Int64
}

// rawCounter counts the bytes written to the socket under TLS.
type rawCounter struct {
	net.Conn
	n atomic.Int64
}

func (c *rawCounter) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// NetConn is the connection under the counter (rawTCP).
func (c *rawCounter) NetConn() net.Conn { return c.Conn }

// settle takes back from the current owner what the connection charged but
// the peer never acknowledged, once: after a failed write (force), or at
// close when the peer has already reset the connection. A response whose
// bytes were all acknowledged keeps its charge.
func (c *meteredConn) settle(force bool) {
	if c.settled.Load() {
		return
	}
	acked, gone, ok := tcpAcked(c.Conn)
	if !ok || !force && !gone || c.settled.Swap(true) {
		return
	}
	sent := c.sent.Load()
	raw := sent
	if c.raw != nil {
		raw = c.raw.n.Load()
	}
	unacked := raw - acked
	if unacked <= 0 || raw <= 0 {
		return
	}
	if c.raw != nil {
		unacked = unacked * sent / raw // the plaintext share
	}
	refund := min(unacked, c.charged.Load())
	if o := c.owner.Load(); o != nil && refund > 0 {
		o.AddEgress(-int(refund))
		c.charged.Add(-refund)
	}
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

// Read reads from the socket, or gives back the byte read while parked.
// (Yielding the processor before the first read between requests, so that
// a busy server finds the next request there, saved a read per request but
// put the goroutine on the scheduler's global queue: make bench's static
// row kept its rate and its p99 went from 0.8 to 5–10 ms. It is not done.)
func (c *meteredConn) Read(p []byte) (int, error) {
	if c.head.bad {
		return 0, errBareLF
	}
	if c.readPending {
		c.readPending = false
		if err := c.setReadDeadline(c.readDeadline); err != nil {
			return 0, err
		}
	}
	var n int
	var err error
	if c.hasFirst && len(p) > 0 {
		c.hasFirst = false
		n = copy(p, c.first[:])
	} else if n, err = c.Conn.Read(p); n == 0 && c.idle && c.parkNow(err) {
		c.parking.Store(true)
		return 0, io.EOF // fasthttp lets go of the connection; Close parks it
	}
	if c.head.on && n > 0 {
		c.head.scan(p[:n])
	}
	if err == io.EOF {
		c.head.eof = true
	}
	return n, err
}

// Close closes the connection; one closed with unread request bytes first
// sends its FIN and reads what the client still sends, bounded by
// lingerBytes and lingerTime, so the client reads the last response
// instead of a reset.
func (c *meteredConn) Close() error {
	if c.parking.CompareAndSwap(true, false) {
		c.park.park(c)
		return nil
	}
	return c.closeConn()
}

func (c *meteredConn) closeConn() error {
	c.closeOnce.Do(func() { close(c.closed) })
	c.settle(false)
	if c.linger.CompareAndSwap(true, false) {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = c.setReadDeadline(time.Now().Add(lingerTime))
			_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
		}
	}
	return c.Conn.Close()
}

func (c *meteredConn) Write(p []byte) (int, error) {
	if g := c.gate.Load(); g != nil && g.Decision() != access.Allow {
		return paced(g, p, c.closed, c.deadline(), c.write)
	}
	return c.write(p)
}

// write writes p and meters what the connection took.
func (c *meteredConn) write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.sent.Add(int64(n))
		if o := c.owner.Load(); o != nil {
			o.AddEgress(n)
			c.charged.Add(int64(n))
		}
	}
	if err != nil {
		c.settle(true)
	}
	return n, err
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

// errBlocked fails the writes of a response whose org was blocked while it
// was being written: the connection closes.
var errBlocked = errors.New("proxy: the org was blocked while its response was written")

// paceCheck is how often a throttled write waiting for its tokens looks at
// the gate again: an upgrade or a block reaches it within this delay.
const paceCheck = 100 * time.Millisecond

// paced writes p with write under g's current decision, read again before
// every piece: throttled, in pieces no larger than the bucket, each after
// its tokens are available (the throttle of HTTP/1.1 connections, h2
// streams and tunnels alike); allowed, the rest at once; blocked, not at
// all (errBlocked). A wait ends early, with an error, when done is closed
// (the connection or stream ended) or when it would pass deadline
// (non-zero): a stalled or departed client never holds its goroutine longer
// than its write deadline.
func paced(g *access.Gate, p []byte, done <-chan struct{}, deadline time.Time, write func([]byte) (int, error)) (int, error) {
	written := 0
	for len(p) > 0 {
		var l *rate.Limiter
		switch g.Decision() {
		case access.Allow:
		case access.Throttle:
			l = g.Limiter()
		default:
			return written, errBlocked
		}
		if l == nil {
			m, err := write(p)
			return written + m, err
		}
		n := min(len(p), l.Burst())
		ok, err := waitN(g, l, n, done, deadline)
		if err != nil {
			return written, err
		}
		if !ok {
			continue // the decision changed while waiting
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
// It looks at g every paceCheck and gives the tokens back (false) when g no
// longer throttles with l.
func waitN(g *access.Gate, l *rate.Limiter, n int, done <-chan struct{}, deadline time.Time) (bool, error) {
	now := time.Now()
	r := l.ReserveN(now, n)
	if !r.OK() {
		return false, fmt.Errorf("proxy: %d bytes exceed the throttle's burst", n)
	}
	until := now.Add(r.DelayFrom(now))
	if !until.After(now) {
		return true, nil
	}
	if !deadline.IsZero() && until.After(deadline) {
		r.CancelAt(now)
		return false, errPaceDeadline
	}
	t := time.NewTimer(min(until.Sub(now), paceCheck))
	defer t.Stop()
	for {
		select {
		case <-done:
			r.Cancel()
			return false, net.ErrClosed
		case now = <-t.C:
		}
		if !now.Before(until) {
			return true, nil
		}
		if g.Decision() != access.Throttle || g.Limiter() != l {
			r.CancelAt(now)
			return false, nil
		}
		t.Reset(min(until.Sub(now), paceCheck))
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

// enforceWrites makes the connection's next writes follow g (nil: none,
// full speed).
func enforceWrites(c net.Conn, g *access.Gate) {
	if mc := metered(c); mc != nil {
		mc.gate.Store(g)
	} else if st, ok := c.(*h2Stream); ok {
		st.gate = g
	}
}

// charge makes the connection's next writes count for usage (nil: nobody's,
// e.g. a request for an unknown host).
func charge(c net.Conn, usage *meter.Counters) {
	if mc := metered(c); mc != nil {
		mc.owner.Store(usage)
		mc.charged.Store(0)
	} else if st, ok := c.(*h2Stream); ok {
		st.owner = usage
	}
}
