package proxy

import (
	"errors"
	"time"

	"golang.org/x/net/http2"
)

// The h2 connection's control frames and flow control: per-second frame
// budgets, SETTINGS, WINDOW_UPDATE, PING, RST_STREAM and PRIORITY, the
// send windows that hold responses back (and the stall clock), and the
// receive window given back to the client.

// budget counts a frame against the per-second caps: control frames, or
// resets when reset is true.
func (c *h2Conn) budget(reset bool) error {
	now := time.Now().Unix()
	if now != c.ctrlSec {
		c.ctrlSec, c.ctrlFrames, c.resets = now, 0, 0
	}
	if reset {
		c.resets++
		if c.resets > c.p.limits.H2MaxResets {
			return h2ConnError{http2.ErrCodeEnhanceYourCalm, "too many stream resets"}
		}
		return nil
	}
	c.ctrlFrames++
	if c.ctrlFrames > c.p.limits.H2MaxControlFrames {
		return h2ConnError{http2.ErrCodeEnhanceYourCalm, "too many control frames"}
	}
	return nil
}

// frame handles one frame whose header has been read.
func (c *h2Conn) frame(fh http2.FrameHeader) error {
	switch fh.Type {
	case http2.FrameHeaders, http2.FrameContinuation:
		return c.headerFrame(fh)
	}
	f, err := c.fr.ReadFrameForHeader(fh)
	if err != nil {
		var se http2.StreamError
		if errors.As(err, &se) {
			if fh.Type == http2.FrameData {
				c.mu.Lock()
				c.creditConnLocked(int64(fh.Length))
				c.mu.Unlock()
			}
			c.resetStream(se.StreamID, se.Code)
			return nil
		}
		return err
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.data(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.budget(false); err != nil {
			return err
		}
		return c.settings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.budget(false); err != nil {
			return err
		}
		c.mu.Lock()
		_ = c.fr.WritePing(true, f.Data)
		c.mu.Unlock()
	case *http2.WindowUpdateFrame:
		if err := c.budget(false); err != nil {
			return err
		}
		return c.windowUpdate(f.StreamID, int64(f.Increment))
	case *http2.RSTStreamFrame:
		if c.idle(f.StreamID) {
			return h2ConnError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		if err := c.budget(true); err != nil {
			return err
		}
		c.mu.Lock()
		if st := c.streams[f.StreamID]; st != nil {
			st.peerReset = true
			c.abortLocked(st)
		}
		c.mu.Unlock()
	case *http2.PriorityFrame:
		if err := c.budget(false); err != nil {
			return err
		}
		if f.StreamDep == f.StreamID {
			c.resetStream(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.PushPromiseFrame:
		return h2ConnError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	case *http2.GoAwayFrame:
		// The client leaves: its open streams still finish.
	}
	return nil // unknown frame types are ignored (RFC 9113 §5.5)
}

// idle: the client has not opened this stream yet.
func (c *h2Conn) idle(id uint32) bool {
	return id%2 == 0 && id != 0 || id > c.maxID.Load()
}

func (c *h2Conn) settings(f *http2.SettingsFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			d := int64(s.Val) - c.peerWin
			c.peerWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += d
				if st.sendWin > 1<<31-1 {
					return h2ConnError{http2.ErrCodeFlowControl, "stream window past 2^31-1"}
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSizeLimit(min(s.Val, 1<<16))
		}
		return nil
	})
	if err != nil {
		return err
	}
	_ = c.fr.WriteSettingsAck()
	if c.rdMode == 1 {
		c.rdMode = 2 // handshake done: the idle deadline takes over
		c.rdSet = time.Time{}
	}
	c.resumeLocked()
	return nil
}

func (c *h2Conn) windowUpdate(id uint32, inc int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 {
		c.sendWin += inc
		if c.sendWin > 1<<31-1 {
			return h2ConnError{http2.ErrCodeFlowControl, "connection window past 2^31-1"}
		}
	} else {
		st := c.streams[id]
		if st == nil {
			if c.idle(id) {
				return h2ConnError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
			}
			return nil // closed: ignored
		}
		st.sendWin += inc
		if st.sendWin > 1<<31-1 {
			c.rstLocked(st, http2.ErrCodeFlowControl)
			return nil
		}
	}
	c.resumeLocked()
	return nil
}

// resumeLocked sends what the windows now allow of the bodies waiting on
// the loop, wakes the workers, and restarts the stall clock.
func (c *h2Conn) resumeLocked() {
	if c.stall != nil {
		c.stall.Stop()
		c.stall = nil
	}
	kept := c.pending[:0]
	for _, st := range c.pending {
		if st.reset {
			continue
		}
		st.pendingBody = c.sendDataLocked(st, st.pendingBody, true)
		if len(st.pendingBody) > 0 {
			kept = append(kept, st)
			continue
		}
		// Off c.pending already: removeLocked must not take it out of
		// the slice this loop is rewriting.
		st.pendingBody = nil
		c.doneSendingLocked(st)
	}
	clear(c.pending[len(kept):])
	c.pending = kept
	if c.waiting > 0 {
		c.cond.Broadcast()
	}
	c.stallCheckLocked()
}

// stallCheckLocked starts the stall clock when responses wait for window.
func (c *h2Conn) stallCheckLocked() {
	if c.stall == nil && (len(c.pending) > 0 || c.waiting > 0) && !c.dead {
		c.stall = time.AfterFunc(c.p.limits.H2StallTimeout, c.stalled)
	}
}

// stalled closes a connection whose client kept its window shut for
// h2_stall_timeout while responses waited.
func (c *h2Conn) stalled() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || len(c.pending) == 0 && c.waiting == 0 {
		c.stall = nil
		return
	}
	_ = c.fr.WriteGoAway(c.maxID.Load(), http2.ErrCodeFlowControl, []byte("flow-control window stalled"))
	c.flushLocked()
	c.dead = true
	c.cond.Broadcast()
	_ = c.conn.Close()
}

// resetStream answers a stream error: RST_STREAM, and the stream, if open,
// ends.
func (c *h2Conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		c.rstLocked(st, code)
		return
	}
	_ = c.fr.WriteRSTStream(id, code)
}

// rstLocked sends RST_STREAM for an open stream and ends it.
func (c *h2Conn) rstLocked(st *h2Stream, code http2.ErrCode) {
	if !st.reset {
		_ = c.fr.WriteRSTStream(st.id, code)
	}
	c.abortLocked(st)
}

// abortLocked ends a stream that was reset (by either side): a worker
// still running it stops at its next read or write and releases it.
func (c *h2Conn) abortLocked(st *h2Stream) {
	st.reset = true
	c.cond.Broadcast()
	if st.running {
		return
	}
	c.removeLocked(st)
}

// creditConnLocked gives n bytes of connection receive window back.
func (c *h2Conn) creditConnLocked(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= h2WindowUpdateMin || c.recvUnacked > 0 && len(c.streams) == 0 {
		_ = c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWin += c.recvUnacked
		c.recvUnacked = 0
	}
}
