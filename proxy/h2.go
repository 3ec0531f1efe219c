package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2. fasthttp speaks HTTP/1.1 only; a connection that negotiates "h2"
// through ALPN is handed (fasthttp's NextProto) to serveH2, which runs its
// own connection loop on x/net/http2's Framer and HPACK coder: it reads
// frames, decodes each request's header block straight into a pooled
// fasthttp.RequestCtx and runs the same Handler as HTTP/1.1 (one request
// path: routing, 421, enforcement, metering). A response that is ready in
// memory (cached file, 304, error page, redirect) is answered on the loop
// itself; one that waits (upstream and Gitea sites, request bodies,
// throttled orgs) on a worker goroutine, bounded by limits.h2_workers. The
// frames one loop iteration produces leave in one write, up to
// h2_conn_buffer bytes: past it they are written before more are made.
//
// Metering: HTTP/1.1 egress is what the connection writes (headers and
// body). An h2 stream is charged the same figure: the response's HTTP/1.1
// header block (and trailer section) plus the body bytes framed for the
// stream. HPACK compression and h2 framing are nobody's usage, so one
// response costs a tenant the same over h1 and h2.
//
// Protections, with their [limits] keys: header lists past max_header_bytes
// get 431 and header blocks past twice that close the connection (HPACK
// bomb, CONTINUATION flood, CVE-2024-27316); h2_max_streams concurrent
// streams, counted until their handler returns (rapid reset, CVE-2023-44487,
// also capped by h2_max_resets per second); h2_max_control_frames per second
// (SETTINGS, PING, empty-DATA floods); h2_conn_window bytes of request
// bodies and h2_conn_buffer bytes of queued frames per connection (the
// memory one connection can make the server hold: Limits.H2ConnBuffer);
// h2_stall_timeout for responses waiting on a closed window; read_timeout
// for the preface and idle_timeout between streams.

const (
	// h2MaxFrameSize is the SETTINGS_MAX_FRAME_SIZE the server advertises,
	// the RFC 9113 initial value, and the largest DATA frame it sends
	// whatever the client's (nginx's http2_chunk_size is 8 KiB).
	h2MaxFrameSize = 16 << 10
	// h2HeaderTableSize is the SETTINGS_HEADER_TABLE_SIZE the server
	// advertises, the RFC 9113 initial value.
	h2HeaderTableSize = 4096
	// h2WindowUpdateMin: consumed request-body bytes are given back to the
	// client in updates of at least this size (or when a body is drained).
	h2WindowUpdateMin = 16 << 10
	// h2BodyKeep: a request-body buffer up to this size is kept for the
	// stream's next DATA frames; a larger one is given up once mostly read.
	h2BodyKeep = 2 * h2MaxFrameSize
)

// h2MaxHeaderList is the largest header list (RFC 7541 §4.1 sizes) a
// request may carry: max_header_bytes plus the 32-byte overhead of ten
// fields, as x/net counts it. Past it the request gets 431.
func h2MaxHeaderList(l Limits) int { return l.MaxHeaderBytes + 10*32 }

// h2Server tracks the h2 connections for Shutdown and bounds the workers.
type h2Server struct {
	p       *Proxy
	workers chan struct{} // one token per stream served off its loop

	mu       sync.Mutex
	conns    map[*h2Conn]struct{}
	shutdown bool
}

func newH2(p *Proxy) *h2Server {
	return &h2Server{p: p, workers: make(chan struct{}, p.limits.H2Workers), conns: map[*h2Conn]struct{}{}}
}

// shutdownAll sends GOAWAY on every h2 connection: streams already opened
// finish, no new ones are served, and each connection closes when its last
// stream ends, so fasthttp's shutdown can complete.
func (s *h2Server) shutdownAll(ctx context.Context) {
	s.mu.Lock()
	s.shutdown = true
	conns := make([]*h2Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
}

// serveH2 serves one connection that negotiated h2. It blocks until the
// connection ends.
func (p *Proxy) serveH2(nc net.Conn) error {
	if mc := metered(nc); mc != nil {
		mc.head.on = false // h2 frames, not HTTP/1.1 heads (framing.go)
	}
	c := newH2Conn(p, nc)
	s := p.h2
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.serve()
	return nil
}

// h2Conn is one HTTP/2 connection. The loop (serve) owns reading; writing,
// streams and windows are under mu, shared with the workers.
type h2Conn struct {
	p    *Proxy
	conn net.Conn
	br   *bufio.Reader
	fr   *http2.Framer
	dec  *hpack.Decoder

	// Loop state, header block being decoded.
	blk        h2Block
	rdMode     int       // read deadline set: 0 none, 1 handshake, 2 idle
	rdSet      time.Time // when the idle deadline was last set
	ctrlSec    int64     // unix second the counters below are for
	ctrlFrames int
	resets     int
	maxID      atomic.Uint32 // highest client stream id seen

	mu          sync.Mutex
	cond        sync.Cond // window opened, body arrived, stream reset, connection ended
	wbuf        *bytes.Buffer
	hbuf        bytes.Buffer // a response header block being encoded
	enc         *hpack.Encoder
	streams     map[uint32]*h2Stream
	pending     []*h2Stream // loop streams whose body waits for window
	waiting     int         // workers waiting for window
	sendWin     int64       // connection send window
	peerWin     int64       // SETTINGS_INITIAL_WINDOW_SIZE of the client
	peerFrame   int         // SETTINGS_MAX_FRAME_SIZE of the client
	recvWin     int64       // connection receive window left
	recvUnacked int64       // consumed, not yet given back
	workers     int         // streams on workers
	goingAway   bool
	dead        bool
	werr        error
	stall       *time.Timer
	closed      chan struct{} // closed when the connection ends: paced waits stop

	// Response header encoding without allocation: interned lower-case
	// names and values (the HPACK encoder keeps the strings it indexes).
	names  map[string]string
	values map[string]string
	visit  func(k, v []byte)
	date   [29]byte
	dateAt int64
	dateS  string
}

func newH2Conn(p *Proxy, nc net.Conn) *h2Conn {
	c := &h2Conn{
		p: p, conn: nc, br: bufio.NewReaderSize(nc, 4096),
		streams: map[uint32]*h2Stream{},
		sendWin: 65535, peerWin: 65535, peerFrame: 16384, recvWin: int64(p.limits.H2ConnWindow),
		closed: make(chan struct{}),
		names:  map[string]string{}, values: map[string]string{},
	}
	c.cond.L = &c.mu
	c.fr = http2.NewFramer(h2ConnWriter{c}, c.br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(h2MaxFrameSize)
	c.dec = hpack.NewDecoder(h2HeaderTableSize, c.onField)
	c.dec.SetMaxStringLength(p.limits.MaxHeaderBytes)
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.visit = c.visitHeader
	return c
}

// h2ConnWriter is the Framer's writer: frames go to the connection's
// pending buffer (mu held), written out by flushLocked.
type h2ConnWriter struct{ c *h2Conn }

func (w h2ConnWriter) Write(p []byte) (int, error) {
	c := w.c
	if c.wbuf == nil {
		c.wbuf = h2BufPool.Get().(*bytes.Buffer)
	}
	return c.wbuf.Write(p)
}

var h2BufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// flushLocked writes the queued frames in one write.
func (c *h2Conn) flushLocked() {
	b := c.wbuf
	if b == nil {
		return
	}
	c.wbuf = nil
	if c.werr == nil && b.Len() > 0 {
		if wt := c.p.limits.WriteTimeout; wt > 0 {
			_ = c.conn.SetWriteDeadline(time.Now().Add(wt))
		}
		if _, err := c.conn.Write(b.Bytes()); err != nil {
			c.werr = err
			c.dead = true
			c.cond.Broadcast()
		}
	}
	if b.Cap() <= 256<<10 {
		b.Reset()
		h2BufPool.Put(b)
	}
}

// h2ConnError ends the connection with GOAWAY and code.
type h2ConnError struct {
	code   http2.ErrCode
	reason string
}

func (e h2ConnError) Error() string { return "h2: " + e.code.String() + ": " + e.reason }

var errH2Done = errors.New("h2: connection done")

// serve runs the connection loop until the connection ends.
func (c *h2Conn) serve() {
	defer c.end()
	if err := c.handshake(); err != nil {
		c.fail(err)
		return
	}
	c.fail(c.loop())
}

// loop reads and handles frames until an error, flushing what it queued
// whenever it has read all the client sent, or the queue passes
// h2_conn_buffer.
func (c *h2Conn) loop() error {
	for {
		if c.br.Buffered() == 0 {
			c.mu.Lock()
			c.flushLocked()
			dead := c.dead
			c.mu.Unlock()
			if dead {
				return errH2Done
			}
			c.readDeadline()
		}
		fh, err := c.fr.ReadFrameHeader()
		if err == nil {
			err = c.frame(fh)
		}
		if err != nil {
			return err
		}
		c.mu.Lock()
		if c.wbuf != nil && c.wbuf.Len() >= c.p.limits.H2ConnBuffer {
			c.flushLocked()
		}
		c.mu.Unlock()
	}
}

// handshake reads the client preface within read_timeout and sends the
// server's SETTINGS and connection window.
func (c *h2Conn) handshake() error {
	l := c.p.limits
	if l.ReadTimeout > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(l.ReadTimeout))
		c.rdMode = 1
	}
	var pre [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil {
		return err
	}
	if string(pre[:]) != http2.ClientPreface {
		return errH2Done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: h2MaxFrameSize},
		http2.Setting{ID: http2.SettingHeaderTableSize, Val: h2HeaderTableSize},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: uint32(l.H2MaxStreams)},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(l.H2StreamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(h2MaxHeaderList(l))},
	)
	if d := l.H2ConnWindow - 65535; d > 0 {
		_ = c.fr.WriteWindowUpdate(0, uint32(d))
	}
	c.flushLocked()
	return c.werr
}

// readDeadline sets the read deadline before the loop blocks: none while
// streams are open, idle_timeout from the last stream otherwise (set again
// at most once a second), read_timeout until the client's first SETTINGS.
func (c *h2Conn) readDeadline() {
	c.mu.Lock()
	active := len(c.streams)
	c.mu.Unlock()
	idle := c.p.limits.IdleTimeout
	switch {
	case c.rdMode == 1:
	case active > 0:
		if c.rdMode != 0 {
			_ = c.conn.SetReadDeadline(time.Time{})
			c.rdMode = 0
		}
	case idle > 0:
		if now := time.Now(); c.rdMode != 2 || now.Sub(c.rdSet) > time.Second {
			_ = c.conn.SetReadDeadline(now.Add(idle))
			c.rdMode, c.rdSet = 2, now
		}
	}
}

// fail ends the connection after an error: GOAWAY with its code for a
// protocol error, a plain close for I/O errors and timeouts.
func (c *h2Conn) fail(err error) {
	code, send, reason := http2.ErrCodeNo, false, ""
	var ce h2ConnError
	var hc http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		code, send, reason = ce.code, true, ce.reason
	case errors.As(err, &hc):
		code, send = http2.ErrCode(hc), true
	case errors.Is(err, http2.ErrFrameTooLarge):
		code, send = http2.ErrCodeFrameSize, true
	case errors.Is(err, os.ErrDeadlineExceeded):
		send = true // idle or handshake timeout: NO_ERROR
	}
	c.mu.Lock()
	if send && !c.dead {
		_ = c.fr.WriteGoAway(c.maxID.Load(), code, []byte(reason))
		if mc := metered(c.conn); mc != nil {
			// The client may still be sending: close after reading what
			// comes, so it reads the GOAWAY rather than a reset (framing.go).
			mc.linger.Store(true)
		}
	}
	c.flushLocked()
	c.mu.Unlock()
}

// end closes the connection and wakes every worker; streams still on
// workers are released by them.
func (c *h2Conn) end() {
	c.mu.Lock()
	c.dead = true
	if c.stall != nil {
		c.stall.Stop()
	}
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	for id, st := range c.streams {
		st.reset = true
		if !st.running {
			delete(c.streams, id)
			c.releaseLocked(st)
		}
	}
	c.pending = c.pending[:0]
	c.cond.Broadcast()
	if c.wbuf != nil {
		c.wbuf.Reset()
		h2BufPool.Put(c.wbuf)
		c.wbuf = nil
	}
	c.mu.Unlock()
	_ = c.conn.Close()
}

// goAway starts a graceful shutdown: GOAWAY NO_ERROR naming the last
// stream served; the connection closes once its streams have ended.
func (c *h2Conn) goAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway || c.dead {
		return
	}
	c.goingAway = true
	_ = c.fr.WriteGoAway(c.maxID.Load(), http2.ErrCodeNo, nil)
	c.flushLocked()
	c.closeIfDrainedLocked()
}

func (c *h2Conn) closeIfDrainedLocked() {
	if c.goingAway && len(c.streams) == 0 {
		c.dead = true
		_ = c.conn.Close() // the loop's read fails and it ends
	}
}
