package proxy

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Reading h2 requests: header blocks decoded into a stream's RequestCtx
// (with the checks of RFC 9113 §8.1-8.3), DATA frames into the request
// body a handler reads, and the request trailers that end it.

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
		c.p.errPages.writeError(&st.ctx, fasthttp.StatusRequestHeaderFieldsTooLarge)
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
	if cap(st.in) > h2BodyKeep && len(st.in) <= cap(st.in)/4 {
		// The window bounds the bytes held, not the buffer they grew:
		// a stream keeps at most four times what it holds.
		st.in = append([]byte(nil), st.in...)
	}
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
