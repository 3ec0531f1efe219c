package proxy

import (
	"net"
	"sync/atomic"
	"time"
)

// Socket deadlines of client connections. fasthttp sets three deadlines for
// every request on a keep-alive connection (the keep-alive one, the
// request's read timeout, the response's write timeout), and setting one
// on a socket reads the clock twice and moves a runtime timer. A
// meteredConn of the HTTP/1.1 loop (one a parkListener accepted) sets on
// the socket only what can matter:
//
//   - the read timeout (limits.read_timeout, set by fasthttp once a
//     request's first byte is read) is kept for the connection's next read
//     (lazyRead): a request whose head came whole in that first read reads
//     no more before the keep-alive deadline replaces it;
//   - the deadline between requests (parkAfter, derived from the keep-alive
//     deadline) is set again only once it has moved forward by more than
//     parkSlack, and a write deadline (h2 connections' too) only once it
//     has moved forward by more than a 64th of limits.write_timeout: the
//     socket's deadline is then at most that much earlier than asked.

// parkSlack is how far the deadline between requests may move forward
// before it is set on the socket again: a connection silent between
// parkAfter - parkSlack and parkAfter after a response is parked.
const parkSlack = parkAfter / 4

// SetReadDeadline between requests (the keep-alive deadline) keeps t for
// the parked wait and waits parkAfter at most in place. fasthttp has just
// set t to now + limits.idle_timeout, so now + parkAfter is derived from
// it rather than read from the clock.
func (c *meteredConn) SetReadDeadline(t time.Time) error {
	switch {
	case c.idle && !t.IsZero():
		c.idleUntil = t
		var p time.Time
		if d := c.park.idleTimeout; d > 0 {
			p = t.Add(parkAfter - d)
		} else {
			p = time.Now().Add(parkAfter)
		}
		if p.Before(t) {
			t = p
		}
		if c.readPending {
			c.readPending = false
		}
		if within(c.rdSet.Load(), t, parkSlack) {
			return nil
		}
	case c.lazyRead:
		// fasthttp's Shutdown closes idle connections from its own
		// goroutine, possibly just after this one read the next request;
		// the connection's goroutine learns of it from this call failing,
		// as the socket's would, and drops the request unanswered (the
		// client retries it elsewhere) instead of counting it for a
		// response that cannot be written.
		select {
		case <-c.closed:
			return net.ErrClosed
		default:
		}
		c.readDeadline, c.readPending = t, true
		return nil
	case c.readPending: // never true once other goroutines may get here
		c.readPending = false
	}
	return c.setReadDeadline(t)
}

func (c *meteredConn) SetWriteDeadline(t time.Time) error {
	c.recordWriteDeadline(t)
	if c.park != nil && within(c.wdSet.Load(), t, c.park.writeSlack) {
		return nil
	}
	err := c.Conn.SetWriteDeadline(t)
	c.wdSet.Store(unixNano(t))
	return err
}

func (c *meteredConn) SetDeadline(t time.Time) error {
	c.recordWriteDeadline(t)
	if c.readPending {
		c.readPending = false
	}
	err := c.Conn.SetDeadline(t)
	c.rdSet.Store(unixNano(t))
	c.wdSet.Store(unixNano(t))
	return err
}

// setReadDeadline sets t on the socket.
func (c *meteredConn) setReadDeadline(t time.Time) error {
	err := c.Conn.SetReadDeadline(t)
	c.rdSet.Store(unixNano(t))
	return err
}

// endLazyRead sets a kept read deadline on the socket and stops keeping
// them (see meteredConn.lazyRead).
func (c *meteredConn) endLazyRead() {
	if c.readPending {
		_ = c.setReadDeadline(c.readDeadline)
	}
	c.lazyRead, c.readPending = false, false
}

func (c *meteredConn) recordWriteDeadline(t time.Time) {
	c.writeDeadline.Store(unixNano(t))
}

// unixNano is t in unix nanoseconds, 0 for the zero time (no deadline).
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// within reports whether a socket deadline set at set (unix nanoseconds, 0:
// none) is t or at most slack earlier, so that t need not be set.
func within(set int64, t time.Time, slack time.Duration) bool {
	if set == 0 || t.IsZero() {
		return false
	}
	d := t.UnixNano() - set
	return d >= 0 && d <= int64(slack)
}

// nextDeadline is the deadline an upstream connection (idleConn) sets
// before a read or a write, now + timeout, and whether to set it: not when
// the one set last (*last, unix nanoseconds) is at most a 64th of timeout
// earlier.
func nextDeadline(last *atomic.Int64, timeout time.Duration) (time.Time, bool) {
	t := time.Now().Add(timeout)
	if within(last.Load(), t, timeout/64) {
		return t, false
	}
	last.Store(t.UnixNano())
	return t, true
}
