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
// socket to become readable (on Linux without reading: recv MSG_PEEK; else
// by reading one byte that the connection's next Read gives back), with the
// keep-alive deadline (limits.idle_timeout) fasthttp set. When bytes come,
// the connection is accepted again; when the deadline passes or the peer closes, it closes
// for real. The connection stays counted by its guardListener throughout.
//
// h2 connections and hijacked ones (WebSocket) are never parked: only the
// HTTP/1.1 loop marks a connection idle (fasthttp's StateIdle).

// parkAfter is how long a keep-alive connection may be silent between
// requests before it is parked: long enough that a client sending requests
// one after another (a page's resources, a load test) never pays the round
// trip through the accept loop, short enough that connections a browser keeps
// open after a page load are parked within the second.
const parkAfter = 50 * time.Millisecond

// parkListener wraps a public listener under fasthttp (its connections are
// *meteredConn or *tlsConn) and accepts parked connections again.
type parkListener struct {
	net.Listener
	start     sync.Once
	accepted  chan acceptResult
	woken     chan net.Conn // parked connections whose next request began
	closed    chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	parked map[*meteredConn]struct{} // closed by Close
	done   bool
}

type acceptResult struct {
	c   net.Conn
	err error
}

func newParkListener(ln net.Listener) *parkListener {
	return &parkListener{Listener: ln, accepted: make(chan acceptResult), woken: make(chan net.Conn),
		closed: make(chan struct{}), parked: map[*meteredConn]struct{}{}}
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
	for mc := range l.parked {
		_ = mc.Conn.Close() // its waiting read fails; wait closes it
	}
	l.mu.Unlock()
	return err
}

// park takes c, which fasthttp has just let go of, and waits for its next
// request on a goroutine of its own.
func (l *parkListener) park(c *meteredConn) {
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		_ = c.closeConn()
		return
	}
	l.parked[c] = struct{}{}
	l.mu.Unlock()
	go l.wait(c)
}

func (l *parkListener) wait(c *meteredConn) {
	came := c.Conn.SetReadDeadline(c.idleUntil) == nil && awaitBytes(c)
	l.mu.Lock()
	delete(l.parked, c)
	l.mu.Unlock()
	if !came {
		_ = c.closeConn() // the keep-alive deadline passed, or the client left
		return
	}
	c.idle = false
	select {
	case l.woken <- c.outer:
	case <-l.closed:
		_ = c.closeConn()
	}
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
		}
	}
}

// parkNow reports whether err, from the idle read between requests, is the
// parkAfter deadline rather than the keep-alive one.
func (c *meteredConn) parkNow(err error) bool {
	var ne net.Error
	return c.idle && c.park != nil && errors.As(err, &ne) && ne.Timeout() && time.Now().Before(c.idleUntil)
}
