package proxy

import (
	"crypto/tls"
	"encoding/binary"
	"net"

	"golang.org/x/net/http2/hpack"
)

// Connection-specific header fields in h2 requests. RFC 9113 §8.2.2: a
// request carrying Connection, Keep-Alive, Proxy-Connection,
// Transfer-Encoding or Upgrade, or TE with any value other than
// "trailers", is malformed, a stream error of type PROTOCOL_ERROR.
//
// x/net/http2's server (v0.62.0) finds these fields after it opened the
// stream (checkValidHTTP2RequestHeaders in its server.go) and then runs a
// handler of its own that answers 400 with a text body (new400Handler;
// golang/go#26321): the request never reaches Proxy.Handler, and no
// http2.Server option changes that answer. It does reset other malformed
// requests with PROTOCOL_ERROR, among them one with more than one host
// field (httpcommon.NewServerRequest, "multiple_host_headers"), checked
// right after the stream opens, before checkValidHTTP2RequestHeaders.
//
// h2StrictConn sits between the TLS connection and the h2 server. It reads
// each frame the client sends, decodes every header block with an HPACK
// decoder of its own, kept in step with the server's (same dynamic table
// size, same blocks in the same order), and when a block holds a
// connection-specific field it appends two host fields with empty values
// to it, as literals without indexing (they leave both dynamic tables as
// they were). The server then resets the stream with PROTOCOL_ERROR after
// opening it, so DATA the client already sent on it is absorbed as on any
// reset stream and the connection stays up. Every other byte reaches the
// server unchanged.
//
// Cost: a second HPACK decode of each header block, and header-block frames
// (at most h2MaxFrameSize of payload) are held until they are complete.

const (
	// h2MaxFrameSize is the SETTINGS_MAX_FRAME_SIZE the h2 server
	// advertises: the RFC 9113 initial value, 16 KiB. It also bounds the
	// header-block frame h2StrictConn holds.
	h2MaxFrameSize = 16 << 10
	// h2HeaderTableSize is the SETTINGS_HEADER_TABLE_SIZE the h2 server
	// advertises, x/net's default; h2StrictConn's decoder uses the same.
	h2HeaderTableSize = 4096
	// h2PerFieldOverhead is what x/net's server adds per field, for 10
	// fields, to MaxHeaderBytes to get its header list size, which bounds
	// the length of any one HPACK string it decodes.
	h2PerFieldOverhead = 32
)

// Frame types and flags of RFC 9113 §6 that h2StrictConn reads.
const (
	h2FrameHeaders      = 0x1
	h2FrameContinuation = 0x9
	h2FlagEndHeaders    = 0x4
	h2FlagPadded        = 0x8
	h2FlagPriority      = 0x20
	h2FrameHeaderLen    = 9
	h2PrefaceLen        = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)

// h2TwoEmptyHosts is two "host: " fields, each a literal header field
// without indexing with a new name (RFC 7541 §6.2.2).
var h2TwoEmptyHosts = []byte{
	0x00, 0x04, 'h', 'o', 's', 't', 0x00,
	0x00, 0x04, 'h', 'o', 's', 't', 0x00,
}

// h2StrictConn is the net.Conn the h2 server reads from; see above. Reads
// run on the server's frame-reading goroutine only.
type h2StrictConn struct {
	net.Conn
	dec *hpack.Decoder

	hdr   [h2FrameHeaderLen]byte // the frame header being read
	nhdr  int                    // bytes of hdr read
	pass  int                    // bytes to hand on as they come: the preface, or a payload
	frame []byte                 // a header-block frame being collected, header included
	need  int                    // the length frame will have
	out   []byte                 // bytes handed on, not yet read by the server
	err   error                  // the connection's read error, after out

	block    bool   // a header block is open (HEADERS without END_HEADERS seen)
	stream   uint32 // its stream
	bad      bool   // it holds a connection-specific field
	te       int    // its TE fields
	off      bool   // inspection stopped: hand everything on as it comes
	framebuf []byte // reused for frame
}

func newH2StrictConn(c net.Conn, maxHeaderBytes int) *h2StrictConn {
	s := &h2StrictConn{Conn: c, pass: h2PrefaceLen}
	s.dec = hpack.NewDecoder(h2HeaderTableSize, s.field)
	s.dec.SetMaxStringLength(maxHeaderBytes + 10*h2PerFieldOverhead)
	return s
}

// ConnectionState passes the TLS state on: the h2 server requires TLS 1.2
// and an allowed cipher suite.
func (c *h2StrictConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// Read hands on the client's bytes: the preface and the payloads of
// frames other than HEADERS and CONTINUATION as they come, header-block
// frames once whole (see headerFrame).
func (c *h2StrictConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.err != nil {
			return 0, c.err
		}
		if c.off {
			return c.Conn.Read(p)
		}
		if c.pass > 0 {
			n, err := c.Conn.Read(p[:min(len(p), c.pass)])
			c.pass -= n
			return n, err
		}
		var err error
		if c.frame != nil {
			var n int
			n, err = c.Conn.Read(c.frame[len(c.frame):c.need])
			c.frame = c.frame[:len(c.frame)+n]
			if len(c.frame) == c.need {
				c.out, c.frame = c.headerFrame(c.frame), nil
			}
		} else {
			var n int
			n, err = c.Conn.Read(c.hdr[c.nhdr:])
			if c.nhdr += n; c.nhdr == h2FrameHeaderLen {
				c.nhdr = 0
				c.startFrame()
			}
		}
		if err != nil {
			// Whatever is held goes on as it is; the server sees the error
			// right after it.
			c.out = append(append(c.out, c.hdr[:c.nhdr]...), c.frame...)
			c.frame, c.err, c.off = nil, err, true
		}
	}
}

// startFrame looks at a complete frame header: a header-block frame is
// collected whole, any other frame handed on as it comes.
func (c *h2StrictConn) startFrame() {
	length := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
	if t := c.hdr[3]; (t == h2FrameHeaders || t == h2FrameContinuation) && length <= h2MaxFrameSize {
		if cap(c.framebuf) < h2FrameHeaderLen+length {
			c.framebuf = make([]byte, 0, max(h2FrameHeaderLen+length, 512))
		}
		c.frame, c.need = append(c.framebuf[:0], c.hdr[:]...), h2FrameHeaderLen+length
		return
	}
	if c.hdr[3] == h2FrameHeaders || c.hdr[3] == h2FrameContinuation {
		c.off = true // too large: the server ends the connection (FRAME_SIZE_ERROR)
	}
	c.out, c.pass = c.hdr[:], length
}

// headerFrame decodes the header block fragment in frame f and returns the
// bytes to hand on: f, or, at the end of a block with a connection-specific
// field, f with h2TwoEmptyHosts added to the block. Anything the server
// will refuse as a connection error (a frame out of order, padding longer
// than the frame, an HPACK error) stops the inspection.
func (c *h2StrictConn) headerFrame(f []byte) []byte {
	if cap(c.framebuf) > 4<<10 {
		c.framebuf = nil // an idle connection keeps no large buffer
	}
	flags, stream := f[4], binary.BigEndian.Uint32(f[5:9])&(1<<31-1)
	frag, pad := f[h2FrameHeaderLen:], 0
	if f[3] == h2FrameHeaders {
		if c.block {
			c.off = true
			return f
		}
		c.block, c.stream, c.bad, c.te = true, stream, false, 0
		if flags&h2FlagPadded != 0 {
			if len(frag) < 1 {
				c.off = true
				return f
			}
			pad, frag = int(frag[0]), frag[1:]
		}
		if flags&h2FlagPriority != 0 {
			if len(frag) < 5 {
				c.off = true
				return f
			}
			frag = frag[5:]
		}
		if pad > len(frag) {
			c.off = true
			return f
		}
		frag = frag[:len(frag)-pad]
	} else if !c.block || stream != c.stream {
		c.off = true
		return f
	}
	if _, err := c.dec.Write(frag); err != nil {
		c.off = true
		return f
	}
	if flags&h2FlagEndHeaders == 0 {
		return f
	}
	c.block = false
	if err := c.dec.Close(); err != nil {
		c.off = true
		return f
	}
	if !c.bad {
		return f
	}
	return appendHosts(f, pad)
}

// appendHosts adds h2TwoEmptyHosts at the end of the header block that
// frame f (padding pad) ends: inside f when it stays within h2MaxFrameSize,
// else in a CONTINUATION frame of its own after f.
func appendHosts(f []byte, pad int) []byte {
	length := len(f) - h2FrameHeaderLen
	if length+len(h2TwoEmptyHosts) <= h2MaxFrameSize {
		out := make([]byte, 0, len(f)+len(h2TwoEmptyHosts))
		out = append(out, f[:len(f)-pad]...)
		out = append(out, h2TwoEmptyHosts...)
		out = append(out, f[len(f)-pad:]...)
		length += len(h2TwoEmptyHosts)
		out[0], out[1], out[2] = byte(length>>16), byte(length>>8), byte(length)
		return out
	}
	out := make([]byte, 0, len(f)+h2FrameHeaderLen+len(h2TwoEmptyHosts))
	out = append(out, f...)
	out[4] &^= h2FlagEndHeaders
	out = append(out, 0, 0, byte(len(h2TwoEmptyHosts)), h2FrameContinuation, h2FlagEndHeaders)
	out = append(out, f[5:9]...)
	return append(out, h2TwoEmptyHosts...)
}

// field is the decoder's emit function: it marks the open block bad as
// x/net's checkValidHTTP2RequestHeaders would refuse it. Names arrive in
// lower case (upper case is malformed, refused by the server's framer).
func (c *h2StrictConn) field(f hpack.HeaderField) {
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		c.bad = true
	case "te":
		c.te++
		if c.te > 1 || (f.Value != "trailers" && f.Value != "") {
			c.bad = true
		}
	}
}
