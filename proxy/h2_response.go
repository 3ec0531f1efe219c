package proxy

import (
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// Writing h2 responses: the header block, then the body as DATA frames
// within the windows, on the loop or on the stream's worker.

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
	if !onWorker && !stream && (st.gate == nil || st.gate.Decision() == access.Allow) {
		if rest := c.sendDataLocked(st, body, true); len(rest) > 0 {
			st.pendingBody = rest
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

// sendBody writes a response body on a worker, paced by the org's gate,
// and ends the stream with the response's trailers, if it has any.
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
		if !c.writeTrailersLocked(st) {
			_ = c.fr.WriteData(st.id, true, nil)
		}
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
	if g := w.st.gate; g != nil && g.Decision() != access.Allow {
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
// rest; end: the last frame ends the stream when p is all sent. Frames
// queued past h2_conn_buffer are written before the next one is made, so
// windows opened wide do not copy whole bodies into the queue.
func (c *h2Conn) sendDataLocked(st *h2Stream, p []byte, end bool) []byte {
	for len(p) > 0 {
		n := int64(len(p))
		n = min(n, c.sendWin, st.sendWin, int64(min(c.peerFrame, h2MaxFrameSize)))
		if n <= 0 {
			return p
		}
		if c.wbuf != nil && c.wbuf.Len() >= c.p.limits.H2ConnBuffer {
			c.flushLocked()
		}
		_ = c.fr.WriteData(st.id, end && n == int64(len(p)), p[:n])
		c.sendWin -= n
		st.sendWin -= n
		st.sent += int(n)
		p = p[n:]
	}
	return p
}
