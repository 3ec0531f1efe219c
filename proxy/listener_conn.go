package proxy

// The connections a guarded listener hands out, and its queue of them.

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// errNotServed is the answer to I/O on a connection fasthttp has not started
// serving; see guardConn.
var errNotServed = errors.New("proxy: connection refused before it was served")

// guardConn is a connection counted by its listener until it closes.
//
// It refuses reads and writes until a deadline is set. fasthttp sets one
// before it serves a connection (the read deadline of limits.read_timeout,
// and on TLS the handshake's), but answers a connection it refuses itself
// (past its own caps, which count a connection until a moment after it
// closed) from its accept loop, without one. On a TLS
// connection that answer would run the handshake there and wait for a client
// that may never speak; refused, it fails at once and the connection closes.
type guardConn struct {
	net.Conn
	l        *guardListener
	key      netip.Addr // counted under this client key; invalid: not counted
	accepted time.Time
	armed    atomic.Bool // a deadline was set: fasthttp serves the connection
	heard    atomic.Bool // a byte was read

	// Guarded by l.mu.
	released   bool       // accounting undone
	queued     bool       // in l.unused
	prev, next *guardConn // in l.unused
}

// NetConn is the accepted connection under the guard (rawTCP).
func (c *guardConn) NetConn() net.Conn { return c.Conn }

func (c *guardConn) Read(b []byte) (int, error) {
	if !c.armed.Load() {
		return 0, errNotServed
	}
	n, err := c.Conn.Read(b)
	if n > 0 && !c.heard.Load() {
		c.heard.Store(true)
		c.l.mu.Lock()
		c.l.unused.remove(c)
		c.l.mu.Unlock()
	}
	return n, err
}

func (c *guardConn) Write(b []byte) (int, error) {
	if !c.armed.Load() {
		return 0, errNotServed
	}
	return c.Conn.Write(b)
}

func (c *guardConn) SetDeadline(t time.Time) error {
	c.armed.Store(true)
	return c.Conn.SetDeadline(t)
}

func (c *guardConn) SetReadDeadline(t time.Time) error {
	c.armed.Store(true)
	return c.Conn.SetReadDeadline(t)
}

func (c *guardConn) SetWriteDeadline(t time.Time) error {
	c.armed.Store(true)
	return c.Conn.SetWriteDeadline(t)
}

// CloseWrite half-closes a TCP connection (meteredConn's lingering close
// uses it); other connections cannot.
func (c *guardConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *guardConn) Close() error {
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// connQueue is a list of connections, oldest first.
type connQueue struct {
	head, tail *guardConn
}

func (q *connQueue) pushBack(c *guardConn) {
	c.prev, c.next, c.queued = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = c
	} else {
		q.head = c
	}
	q.tail = c
}

func (q *connQueue) popFront() *guardConn {
	c := q.head
	if c != nil {
		q.remove(c)
	}
	return c
}

func (q *connQueue) remove(c *guardConn) {
	if !c.queued {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		q.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		q.tail = c.prev
	}
	c.prev, c.next, c.queued = nil, nil, false
}
