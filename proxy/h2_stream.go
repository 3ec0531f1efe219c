package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
	gate  *billing.Gate // the org's enforcement, see enforceWrites
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

// h2Block is the header block the loop is decoding.
type h2Block struct {
	st        *h2Stream // the new stream; nil for trailers or a dropped block
	trailers  *h2Stream // the stream these trailers end
	id        uint32
	endStream bool
	bytes     int // compressed bytes so far
	list      int // decoded header list size so far
	tooBig    bool
	malformed bool
	refuse    bool // past h2_max_streams, or going away: decoded, dropped
	regular   bool // a regular field was seen (pseudo-fields must come first)
	method    bool
	scheme    bool
	path      bool
	authority bool
	te        bool
	connect   bool
}

var h2HeaderBufPool = sync.Pool{New: func() any { b := make([]byte, h2MaxFrameSize); return &b }}

// headerFrame reads a HEADERS or CONTINUATION frame (the Framer checked its
// size and order) and decodes its fragment. The payload is read here, not
// by the Framer, which would allocate a frame per request.
func (c *h2Conn) headerFrame(fh http2.FrameHeader) error {
	bp := h2HeaderBufPool.Get().(*[]byte)
	defer h2HeaderBufPool.Put(bp)
	p := (*bp)[:fh.Length]
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	if fh.StreamID == 0 {
		return h2ConnError{http2.ErrCodeProtocol, "header block on stream 0"}
	}
	if fh.Type == http2.FrameHeaders {
		pad := 0
		if fh.Flags.Has(http2.FlagHeadersPadded) {
			if len(p) < 1 {
				return h2ConnError{http2.ErrCodeFrameSize, "HEADERS too short"}
			}
			pad, p = int(p[0]), p[1:]
		}
		selfDep := false
		if fh.Flags.Has(http2.FlagHeadersPriority) {
			if len(p) < 5 {
				return h2ConnError{http2.ErrCodeFrameSize, "HEADERS too short"}
			}
			dep := uint32(p[0]&0x7f)<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])
			selfDep = dep == fh.StreamID
			p = p[5:]
		}
		if pad > len(p) {
			return h2ConnError{http2.ErrCodeProtocol, "HEADERS padding longer than the frame"}
		}
		p = p[:len(p)-pad]
		if err := c.beginBlock(fh); err != nil {
			return err
		}
		if selfDep {
			c.blk.malformed = true
		}
	}
	c.blk.bytes += len(p)
	if c.blk.bytes > 2*c.p.limits.MaxHeaderBytes+h2MaxFrameSize {
		return h2ConnError{http2.ErrCodeEnhanceYourCalm, "header block too large"}
	}
	if _, err := c.dec.Write(p); err != nil {
		return h2ConnError{http2.ErrCodeCompression, "HPACK: " + err.Error()}
	}
	if !fh.Flags.Has(http2.FlagHeadersEndHeaders) {
		return nil
	}
	if err := c.dec.Close(); err != nil {
		return h2ConnError{http2.ErrCodeCompression, "HPACK: " + err.Error()}
	}
	return c.endBlock()
}

// beginBlock starts a header block: a new stream's request, or trailers.
func (c *h2Conn) beginBlock(fh http2.FrameHeader) error {
	id := fh.StreamID
	c.blk = h2Block{id: id, endStream: fh.Flags.Has(http2.FlagHeadersEndStream)}
	c.dec.SetEmitEnabled(true)
	if id%2 == 0 {
		return h2ConnError{http2.ErrCodeProtocol, "even stream id from a client"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		switch {
		case st.reset:
			c.blk.refuse = true
			c.blk.malformed = st.peerReset
		case st.recvDone:
			c.blk.refuse = true
			c.blk.malformed = true // STREAM_CLOSED, see endBlock
		default:
			c.blk.trailers = st
		}
		return nil
	}
	if id <= c.maxID.Load() {
		return h2ConnError{http2.ErrCodeProtocol, "HEADERS on a closed stream"}
	}
	c.maxID.Store(id)
	if c.goingAway || c.dead {
		c.blk.refuse = true
		return nil
	}
	if len(c.streams) >= c.p.limits.H2MaxStreams {
		c.blk.refuse = true
		c.blk.malformed = false
		return nil
	}
	st := h2StreamPool.Get().(*h2Stream)
	st.c, st.id, st.conn, st.start = c, id, c.conn, time.Now()
	st.sendWin, st.recvWin, st.declLen = c.peerWin, int64(c.p.limits.H2StreamWindow), -1
	st.ctx.Init2(st, fasthttpLogger{c.p.log}, false)
	c.blk.st = st
	return nil
}

// onField receives each decoded field of the block (hpack.Decoder emit).
func (c *h2Conn) onField(f hpack.HeaderField) {
	b := &c.blk
	b.list += int(f.Size())
	if b.list > h2MaxHeaderList(c.p.limits) {
		b.tooBig = true
		c.dec.SetEmitEnabled(false) // decoded, not kept: HPACK state stays in step
		return
	}
	if b.malformed {
		return
	}
	name := f.Name
	if b.trailers != nil {
		if strings.HasPrefix(name, ":") {
			b.malformed = true
		}
		return // request trailers are not passed on
	}
	st := b.st
	if st == nil {
		return
	}
	req := &st.ctx.Request
	if strings.HasPrefix(name, ":") {
		if b.regular {
			b.malformed = true
			return
		}
		switch name {
		case ":method":
			b.malformed = b.method
			b.method = true
			b.connect = f.Value == "CONNECT"
			req.Header.SetMethod(f.Value)
		case ":path":
			b.malformed = b.path || f.Value == ""
			b.path = true
			req.SetRequestURI(f.Value)
		case ":scheme":
			b.malformed = b.scheme
			b.scheme = true
		case ":authority":
			b.malformed = b.authority
			b.authority = true
			req.Header.SetHost(f.Value)
		default:
			b.malformed = true
		}
		return
	}
	b.regular = true
	if !h2ValidName(name) || !httpguts.ValidHeaderFieldValue(f.Value) {
		b.malformed = true
		return
	}
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		b.malformed = true // connection-specific (RFC 9113 §8.2.2)
	case "te":
		b.malformed = b.te || f.Value != "trailers"
		b.te = true
		req.Header.Add(name, f.Value)
	case "content-length":
		n, err := strconv.ParseInt(f.Value, 10, 64)
		if err != nil || n < 0 || st.declLen >= 0 && st.declLen != n {
			b.malformed = true
		}
		st.declLen = n
	case "host":
		if !b.authority {
			req.Header.SetHost(f.Value)
		}
	default:
		req.Header.Add(name, f.Value)
	}
}

// h2ValidName: a lower-case field name of token characters.
func h2ValidName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return httpguts.ValidHeaderFieldName(s)
}

// endBlock acts on a complete header block.
func (c *h2Conn) endBlock() error {
	b := &c.blk
	if st := b.trailers; st != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		if b.malformed || !b.endStream {
			c.rstLocked(st, http2.ErrCodeProtocol)
			return nil
		}
		c.endBodyLocked(st)
		return nil
	}
	st := b.st
	b.st = nil
	if st == nil {
		switch {
		case b.malformed: // HEADERS on a half-closed or client-reset stream
			c.mu.Lock()
			_ = c.fr.WriteRSTStream(b.id, http2.ErrCodeStreamClosed)
			if st := c.streams[b.id]; st != nil {
				c.abortLocked(st)
			}
			c.mu.Unlock()
		case b.refuse && !c.goingAway:
			c.resetStream(b.id, http2.ErrCodeRefusedStream)
		}
		return nil
	}
	if !b.method || b.connect && (!b.authority || b.path || b.scheme) || !b.connect && (!b.scheme || !b.path) {
		b.malformed = true
	}
	if b.malformed {
		c.mu.Lock()
		_ = c.fr.WriteRSTStream(st.id, http2.ErrCodeProtocol)
		c.releaseLocked(st)
		c.mu.Unlock()
		return nil
	}
	c.p.metrics.h2Requests.Inc()
	c.mu.Lock()
	c.streams[st.id] = st
	if b.endStream {
		st.recvDone = true
		if st.declLen > 0 {
			c.rstLocked(st, http2.ErrCodeProtocol)
			c.mu.Unlock()
			return nil
		}
	} else if st.declLen != 0 {
		st.ctx.Request.SetBodyStream(&st.body, int(st.declLen))
	}
	c.mu.Unlock()
	if b.tooBig {
		writeError(&st.ctx, fasthttp.StatusRequestHeaderFieldsTooLarge)
		c.respond(st, false)
		return nil
	}
	if b.endStream && !c.p.h2Waits(&st.ctx) {
		c.p.Handler(&st.ctx)
		c.respond(st, false)
		return nil
	}
	select {
	case c.p.h2.workers <- struct{}{}:
	default:
		c.mu.Lock()
		c.rstLocked(st, http2.ErrCodeRefusedStream)
		c.mu.Unlock()
		return nil
	}
	c.mu.Lock()
	st.running = true
	c.workers++
	c.mu.Unlock()
	go c.work(st)
	return nil
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
	if r := p.table.Load().hosts[string(key)]; r != nil {
		return r.rt.dir == nil || r.gate != nil && r.gate.Decision() == billing.Throttle
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

// drainBody reads what is left of a request body the handler did not read
// (a 405, an error page), up to drainBytes within drainTime, as on
// HTTP/1.1 (finishBody), before the response is sent: the stream's framing
// is then checked to its end (a DATA length that contradicts
// content-length is a stream error, RFC 9113 §8.1.1). A longer body is cut
// by RST_STREAM NO_ERROR after the response.
func (c *h2Conn) drainBody(st *h2Stream) {
	c.mu.Lock()
	done := st.recvDone || st.reset || st.declLen > drainBytes
	c.mu.Unlock()
	if done {
		return
	}
	t := time.AfterFunc(drainTime, func() {
		c.mu.Lock()
		st.body.expired = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	_, _ = io.CopyN(io.Discard, &st.body, drainBytes+1)
	t.Stop()
	c.mu.Lock()
	st.body.expired = false
	c.mu.Unlock()
}

// data handles a DATA frame.
func (c *h2Conn) data(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	if c.idle(id) {
		return h2ConnError{http2.ErrCodeProtocol, "DATA on an idle stream"}
	}
	if f.Length == 0 && !f.StreamEnded() {
		if err := c.budget(false); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recvWin < n {
		return h2ConnError{http2.ErrCodeFlowControl, "DATA past the connection window"}
	}
	c.recvWin -= n
	st := c.streams[id]
	if st == nil || st.recvDone || st.reset {
		c.creditConnLocked(n)
		switch {
		case st == nil || st.peerReset:
			_ = c.fr.WriteRSTStream(id, http2.ErrCodeStreamClosed)
		case !st.reset:
			c.rstLocked(st, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if st.recvWin < n {
		c.creditConnLocked(n)
		c.rstLocked(st, http2.ErrCodeFlowControl)
		return nil
	}
	st.recvWin -= n
	d := f.Data()
	if pad := n - int64(len(d)); pad > 0 {
		c.creditConnLocked(pad)
		st.inUnacked += pad
	}
	st.recvLen += int64(len(d))
	if st.declLen >= 0 && st.recvLen > st.declLen {
		c.creditConnLocked(int64(len(d)))
		c.rstLocked(st, http2.ErrCodeProtocol)
		return nil
	}
	st.in = append(st.in, d...)
	if f.StreamEnded() {
		c.endBodyLocked(st)
	}
	c.cond.Broadcast()
	return nil
}

// endBodyLocked: the request body is complete (END_STREAM).
func (c *h2Conn) endBodyLocked(st *h2Stream) {
	st.recvDone = true
	if st.declLen >= 0 && st.recvLen != st.declLen {
		c.rstLocked(st, http2.ErrCodeProtocol)
		return
	}
	c.cond.Broadcast()
	if st.sendDone {
		c.removeLocked(st)
	}
}

// h2Body is the request body a handler reads: what DATA frames brought,
// with the windows given back as it is read.
type h2Body struct {
	st      *h2Stream
	expired bool // drainBody's time is up
}

var errH2StreamReset = errors.New("h2: stream reset")

func (b *h2Body) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(st.in) == 0 {
		switch {
		case st.reset || c.dead:
			return 0, errH2StreamReset
		case st.recvDone:
			return 0, io.EOF
		case b.expired:
			return 0, errPaceDeadline
		}
		c.cond.Wait()
	}
	n := copy(p, st.in)
	st.in = st.in[:copy(st.in, st.in[n:])]
	st.inUnacked += int64(n)
	c.creditConnLocked(int64(n))
	if !st.recvDone && (st.inUnacked >= h2WindowUpdateMin || len(st.in) == 0) {
		_ = c.fr.WriteWindowUpdate(st.id, uint32(st.inUnacked))
		st.recvWin += st.inUnacked
		st.inUnacked = 0
	}
	c.flushLocked()
	return n, nil
}

// respond sends the handler's response: headers and as much body as the
// windows allow, the rest later (a loop stream: when WINDOW_UPDATE
// arrives) or as it comes (a worker, paced by the org's gate). onWorker: the
// call runs on the stream's worker.
func (c *h2Conn) respond(st *h2Stream, onWorker bool) {
	resp := &st.ctx.Response
	if st.ctx.IsHead() {
		resp.SkipBody = true
	}
	if len(resp.Header.Server()) == 0 {
		resp.Header.SetServer(serverName)
	}
	status := resp.StatusCode()
	sendBody := !resp.SkipBody && status >= 200 && status != fasthttp.StatusNoContent && status != fasthttp.StatusNotModified
	if !resp.IsBodyStream() && (sendBody || len(resp.Body()) > 0) {
		resp.Header.SetContentLength(len(resp.Body())) // as Response.Write does for HTTP/1.1
	}
	st.headerBytes = len(resp.Header.Header()) // the HTTP/1.1 header block
	var body []byte
	stream := resp.IsBodyStream()
	if sendBody && !stream {
		body = resp.Body()
	}
	if !sendBody && stream {
		_ = resp.CloseBodyStream()
		stream = false
	}
	c.mu.Lock()
	if st.reset || c.dead {
		c.finishLocked(st, onWorker)
		c.mu.Unlock()
		return
	}
	c.writeHeadersLocked(st, status, len(body) == 0 && !stream)
	if len(body) == 0 && !stream {
		c.doneSendingLocked(st)
		c.finishLocked(st, onWorker)
		c.mu.Unlock()
		return
	}
	if !onWorker && !stream && (st.gate == nil || st.gate.Decision() == billing.Allow) {
		st.pendingBody = c.sendDataLocked(st, body, true)
		if len(st.pendingBody) > 0 {
			c.pending = append(c.pending, st)
			c.stallCheckLocked()
		} else {
			c.doneSendingLocked(st)
		}
		c.mu.Unlock()
		return
	}
	if !onWorker {
		// A body read as it is sent (a large file), or paced: hand it to a
		// worker; the loop goes on.
		st.running = true
		c.workers++
		c.mu.Unlock()
		c.p.h2.workers <- struct{}{}
		go func() {
			defer func() { <-c.p.h2.workers }()
			c.sendBody(st, body, stream)
		}()
		return
	}
	c.mu.Unlock()
	c.sendBody(st, body, stream)
}

// sendBody writes a response body on a worker, paced by the org's gate.
func (c *h2Conn) sendBody(st *h2Stream, body []byte, stream bool) {
	var err error
	if st.gate != nil && c.p.limits.WriteTimeout > 0 {
		st.out.deadline = time.Now().Add(c.p.limits.WriteTimeout)
	}
	if stream {
		err = st.ctx.Response.BodyWriteTo(&st.out)
	} else {
		_, err = st.out.Write(body)
	}
	if err != nil && c.p.log.Enabled(nil, -4) {
		c.p.log.Debug("h2 response body not fully written", "err", err)
	}
	c.mu.Lock()
	switch {
	case st.reset || c.dead:
	case err == nil:
		_ = c.fr.WriteData(st.id, true, nil)
		c.doneSendingLocked(st)
	default: // blocked, past its deadline, or the body failed: cut
		_ = c.fr.WriteRSTStream(st.id, http2.ErrCodeInternal)
		st.reset = true
	}
	c.flushLocked()
	c.finishLocked(st, true)
	c.mu.Unlock()
}

// h2BodyWriter writes a worker's response body as DATA frames.
type h2BodyWriter struct {
	st       *h2Stream
	deadline time.Time // a paced write's deadline (zero: none)
}

func (w *h2BodyWriter) Write(p []byte) (int, error) {
	if g := w.st.gate; g != nil && g.Decision() != billing.Allow {
		return paced(g, p, w.st.c.closed, w.deadline, w.write)
	}
	return w.write(p)
}

// write frames p, waiting for window as needed, and flushes.
func (w *h2BodyWriter) write(p []byte) (int, error) {
	st, c := w.st, w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	written := 0
	for len(p) > 0 {
		if st.reset || c.dead {
			return written, errH2StreamReset
		}
		rest := c.sendDataLocked(st, p, false)
		written += len(p) - len(rest)
		p = rest
		if len(p) > 0 {
			c.flushLocked()
			c.waiting++
			c.stallCheckLocked()
			c.cond.Wait()
			c.waiting--
		}
	}
	c.flushLocked()
	return written, nil
}

// sendDataLocked frames as much of p as the windows allow and returns the
// rest; end: the last frame ends the stream when p is all sent.
func (c *h2Conn) sendDataLocked(st *h2Stream, p []byte, end bool) []byte {
	for len(p) > 0 {
		n := int64(len(p))
		n = min(n, c.sendWin, st.sendWin, int64(c.peerFrame))
		if n <= 0 {
			return p
		}
		_ = c.fr.WriteData(st.id, end && n == int64(len(p)), p[:n])
		c.sendWin -= n
		st.sendWin -= n
		st.sent += int(n)
		p = p[n:]
	}
	return p
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
	st.recvLen, st.inUnacked, st.headerBytes, st.sent = 0, 0, 0, 0
	h2StreamPool.Put(st)
}
