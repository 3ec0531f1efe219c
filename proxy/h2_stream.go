package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// h2Stream is one request on an h2 connection, and the net.Conn its
// RequestCtx sees: the client connection's addresses and TLS state, and
// the counters and gate the handler charges the stream to (see charge and
// enforceWrites). Streams are pooled with their RequestCtx.
type h2Stream struct {
	ctx   fasthttp.RequestCtx
	c     *h2Conn
	id    uint32
	start time.Time // when the request arrived (requestTime)
	conn  net.Conn
	owner *meter.Counters
	gate  *access.Gate // the org's enforcement, see enforceWrites
	body  h2Body
	out   h2BodyWriter

	// Under c.mu.
	running     bool  // a worker owns the stream: it releases it
	reset       bool  // RST_STREAM sent or received: stop
	peerReset   bool  // RST_STREAM received: later frames are STREAM_CLOSED
	recvDone    bool  // END_STREAM received
	sendDone    bool  // END_STREAM sent
	sendWin     int64 // send window
	recvWin     int64 // receive window left
	declLen     int64 // content-length of the request, -1: none
	recvLen     int64
	in          []byte // request body received, not yet read
	inUnacked   int64
	pendingBody []byte // a loop stream's body left to send
	headerBytes int    // the HTTP/1.1 header block (metering)
	sent        int    // body bytes framed
}

var h2StreamPool = sync.Pool{New: func() any {
	st := &h2Stream{}
	st.body.st = st
	st.out.st = st
	return st
}}

var errStreamIO = errors.New("proxy: an h2 stream is not read or written as a net.Conn")

func (s *h2Stream) Read([]byte) (int, error)         { return 0, errStreamIO }
func (s *h2Stream) Write([]byte) (int, error)        { return 0, errStreamIO }
func (s *h2Stream) Close() error                     { return nil }
func (s *h2Stream) LocalAddr() net.Addr              { return s.conn.LocalAddr() }
func (s *h2Stream) RemoteAddr() net.Addr             { return s.conn.RemoteAddr() }
func (s *h2Stream) SetDeadline(time.Time) error      { return nil }
func (s *h2Stream) SetReadDeadline(time.Time) error  { return nil }
func (s *h2Stream) SetWriteDeadline(time.Time) error { return nil }

// Handshake and ConnectionState make ctx.IsTLS() true (X-Forwarded-Proto).
func (s *h2Stream) Handshake() error { return nil }
func (s *h2Stream) ConnectionState() tls.ConnectionState {
	if tc, ok := s.conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// h2Waits reports whether a request's answer may wait (upstream, Gitea,
// internal endpoints, throttled writes): those run on a worker. Everything
// else (directory sites, unknown hosts, 421, blocked orgs) is answered from
// memory on the connection loop.
func (p *Proxy) h2Waits(ctx *fasthttp.RequestCtx) bool {
	var buf [sites.MaxHostLen + 8]byte
	key, err := sites.AppendHostKey(buf[:0], ctx.Host())
	if err != nil {
		return false
	}
	if r := p.lookup(key); r != nil {
		return r.rt.dir == nil || r.gate != nil && r.gate.Decision() == access.Throttle
	}
	if p.internal != nil && p.internal[string(key)] != nil {
		return true
	}
	if p.pagesSuffix != "" {
		_, ok := pagesOwner(key, p.pagesSuffix)
		return ok
	}
	return false
}

// work serves a stream on a worker goroutine.
func (c *h2Conn) work(st *h2Stream) {
	defer func() { <-c.p.h2.workers }()
	c.p.Handler(&st.ctx)
	c.drainBody(st)
	c.respond(st, true)
}

// doneSendingLocked: END_STREAM went out; a stream whose request body is
// still coming is cut with RST_STREAM NO_ERROR (RFC 9113 §8.1).
func (c *h2Conn) doneSendingLocked(st *h2Stream) {
	st.sendDone = true
	if !st.recvDone && !st.reset {
		_ = c.fr.WriteRSTStream(st.id, http2.ErrCodeNo)
		st.reset = true
	}
	if !st.running {
		c.removeLocked(st)
	}
}

// finishLocked ends a worker's hold on a stream.
func (c *h2Conn) finishLocked(st *h2Stream, onWorker bool) {
	if onWorker || st.running {
		st.running = false
		c.workers--
	}
	if st.sendDone || st.reset || c.dead {
		c.removeLocked(st)
	}
}

// removeLocked closes a stream: charges it, gives back the window of body
// bytes never read, and releases it.
func (c *h2Conn) removeLocked(st *h2Stream) {
	if c.streams[st.id] != st {
		return
	}
	delete(c.streams, st.id)
	if n := int64(len(st.in)) + st.inUnacked; n > 0 {
		c.creditConnLocked(n)
	}
	if st.pendingBody != nil {
		for i, q := range c.pending {
			if q == st {
				c.pending = append(c.pending[:i], c.pending[i+1:]...)
				break
			}
		}
	}
	c.releaseLocked(st)
	c.closeIfDrainedLocked()
}

// releaseLocked charges a stream and returns it to the pool.
func (c *h2Conn) releaseLocked(st *h2Stream) {
	if st.owner != nil {
		st.owner.AddEgress(st.headerBytes + st.sent)
	}
	st.ctx.Request.Reset()
	st.ctx.Response.Reset()
	st.ctx.ResetUserValues()
	st.c, st.id, st.conn, st.owner, st.gate = nil, 0, nil, nil, nil
	st.body.expired = false
	st.out.deadline = time.Time{}
	st.running, st.reset, st.peerReset, st.recvDone, st.sendDone = false, false, false, false, false
	st.in, st.pendingBody = st.in[:0], nil
	if cap(st.in) > h2BodyKeep {
		st.in = nil
	}
	st.recvLen, st.inUnacked, st.headerBytes, st.sent = 0, 0, 0, 0
	h2StreamPool.Put(st)
}
