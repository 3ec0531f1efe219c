package proxy

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Idle keep-alive connections are parked. fasthttp serves a connection on
// one goroutine that holds, between requests, its RequestCtx, its 16 KiB read
// buffer (limits.max_header_bytes), its write buffer and the stack the last
// request grew: about 19 KB per idle plain connection and 68 KB per TLS one
// with a thousand open. Browsers keep connections open for minutes after a
// page load, so an edge holds far more idle connections than busy ones.
//
// A connection silent for parkAfter after its last response is handed back
// instead: its idle read reports the end of the connection to fasthttp
// (which releases its buffers and context to its pools and "closes" it),
// the close is turned into parking, and a small goroutine waits for the
// socket to become readable, until the keep-alive deadline (limits.idle_timeout)
// fasthttp set. On Linux one poller per listener watches all its parked
// sockets (an epoll set and one goroutine: park_linux.go), so a parked
// connection holds no goroutine, no stack and no buffer: its socket, its
// meteredConn and, under TLS, crypto/tls's per-connection state. Elsewhere,
// and for connections without a socket, a goroutine per connection reads
// one byte that the connection's next Read gives back. When bytes come,
// the connection is accepted again; when the deadline passes or the peer
// closes, it closes for real. The connection stays counted by its
// guardListener throughout.
//
// h2 connections and hijacked ones (WebSocket) are never parked: only the
// HTTP/1.1 loop marks a connection idle (fasthttp's StateIdle).

// parkAfter is how long a keep-alive connection may be silent between
// requests before it is parked: long enough that a client sending requests
// back to back (a load test, pipelining) never pays the trip through the
// poller and the accept loop (tens of microseconds, far below a network
// round trip), short enough that the read and write buffers fasthttp holds
// until then (48 KiB a connection) go back to their pools before a burst of
// new connections piles them up: in make bench's idle row (4,000
// connections opened by 8 clients) 50 ms left ~700 sets, 34 MB, in the heap
// at once; 10 ms took the row from 5.7 to 3.2 KB per idle connection.
const parkAfter = 10 * time.Millisecond

// parkListener wraps a public listener under fasthttp (its connections are
// *meteredConn or *tlsConn) and accepts parked connections again.
type parkListener struct {
	net.Listener
	start     sync.Once
	accepted  chan acceptResult
	woken     chan net.Conn // parked connections whose next request began
	closed    chan struct{}
	closeOnce sync.Once
	// idleTimeout is the keep-alive deadline fasthttp sets between requests
	// (limits.idle_timeout): the parked wait's deadline is derived from it
	// without reading the clock again (meteredConn.SetReadDeadline). Zero:
	// unknown, the clock is read.
	idleTimeout time.Duration
	// writeSlack is how far a write deadline may move forward before it is
	// set on the socket again (deadline.go): a 64th of limits.write_timeout.
	writeSlack time.Duration

	mu     sync.Mutex
	parked map[*meteredConn]struct{} // closed by Close
	poll   *poller                   // started by the first park; nil: none
	done   bool
}

type acceptResult struct {
	c   net.Conn
	err error
}

// newParkListener parks the connections of ln, served with limits.
func newParkListener(ln net.Listener, limits Limits) *parkListener {
	return &parkListener{Listener: ln, accepted: make(chan acceptResult), woken: make(chan net.Conn),
		closed: make(chan struct{}), parked: map[*meteredConn]struct{}{},
		idleTimeout: limits.IdleTimeout, writeSlack: limits.WriteTimeout / 64}
}

// Accept returns a new connection or a parked one whose client spoke again.
func (l *parkListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.woken:
		return c, nil
	case r := <-l.accepted:
		if r.err != nil {
			return nil, r.err
		}
		if mc := metered(r.c); mc != nil {
			mc.park, mc.outer = l, r.c
		}
		return r.c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *parkListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		select {
		case l.accepted <- acceptResult{c, err}:
		case <-l.closed:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

// Close stops accepting and closes the parked connections.
func (l *parkListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	err := l.Listener.Close()
	l.mu.Lock()
	l.done = true
	parked, poll := l.parked, l.poll
	l.parked = nil
	l.mu.Unlock()
	for mc := range parked {
		if poll != nil {
			poll.remove(mc)
		}
		_ = mc.closeConn() // a goroutine's waiting read fails; take tells it
	}
	if poll != nil {
		poll.close()
	}
	return err
}

// park takes c, which fasthttp has just let go of, and waits for its next
// request: on the listener's poller when c has a socket, else on a
// goroutine of its own.
func (l *parkListener) park(c *meteredConn) {
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		_ = c.closeConn()
		return
	}
	l.parked[c] = struct{}{}
	if l.poll == nil {
		l.poll = newPoller(l)
	}
	poll := l.poll
	l.mu.Unlock()
	if poll == nil || !poll.add(c) {
		go l.wait(c)
	}
}

// take removes c from the parked connections and reports whether it was
// there: whoever takes a parked connection owns it (hands it back or closes
// it); Close takes them all.
func (l *parkListener) take(c *meteredConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.parked[c]; !ok {
		return false
	}
	delete(l.parked, c)
	return true
}

// handBack gives c, whose client sent its next request, to Accept.
func (l *parkListener) handBack(c *meteredConn) {
	c.idle = false
	select {
	case l.woken <- c.outer:
		return
	default: // Accept is busy: wait for it without holding up the caller
	}
	go func() {
		select {
		case l.woken <- c.outer:
		case <-l.closed:
			_ = c.closeConn()
		}
	}()
}

// wait waits for c's next byte on a goroutine of its own (connections
// without a socket the poller can watch).
func (l *parkListener) wait(c *meteredConn) {
	came := c.setReadDeadline(c.idleUntil) == nil && readFirst(c)
	if !l.take(c) {
		return // Close took it
	}
	if !came {
		_ = c.closeConn() // the keep-alive deadline passed, or the client left
		return
	}
	l.handBack(c)
}

// readFirst waits for the client's next byte by reading it; c's next Read
// gives it back.
func readFirst(c *meteredConn) bool {
	n, _ := c.Conn.Read(c.first[:])
	c.hasFirst = n > 0
	return c.hasFirst
}

// connState marks the connections fasthttp's HTTP/1.1 loop holds between
// requests (see meteredConn.SetReadDeadline). It is fasthttp's ConnState
// hook; StateIdle and StateActive come from the connection's own goroutine.
func connState(c net.Conn, s fasthttp.ConnState) {
	switch s {
	case fasthttp.StateIdle, fasthttp.StateActive:
		if mc := metered(c); mc != nil && mc.park != nil {
			mc.idle = s == fasthttp.StateIdle
			mc.lazyRead = s == fasthttp.StateActive
		}
	}
}

// parkNow reports whether err, from the idle read between requests, is the
// parkAfter deadline rather than the keep-alive one.
func (c *meteredConn) parkNow(err error) bool {
	var te interface{ Timeout() bool } // net.Error's, and in-memory conns' that lack Temporary
	return c.idle && c.park != nil && errors.As(err, &te) && te.Timeout() && time.Now().Before(c.idleUntil)
}
