package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2HopByHop are the connection-specific response headers HTTP/2 forbids
// (RFC 9113 §8.2.2).
var h2HopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Transfer-Encoding": true, "Upgrade": true,
}

// h2Statuses are the :status values, as strings the encoder may keep.
var h2Statuses = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

const (
	h2InternCap = 64  // interned names, and values, per connection
	h2InternMax = 256 // longer values are sent never-indexed, not interned
)

// writeHeadersLocked encodes the response header block of st (the fields
// fasthttp would write over HTTP/1.1, lower-cased, without the
// connection-specific ones, and a date) and frames it.
func (c *h2Conn) writeHeadersLocked(st *h2Stream, status int, endStream bool) {
	c.hbuf.Reset()
	if status < 100 || status >= len(h2Statuses) {
		status = fasthttp.StatusInternalServerError
	}
	_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: h2Statuses[status]})
	st.ctx.Response.Header.VisitAll(c.visit)
	if len(st.ctx.Response.Header.Peek(fasthttp.HeaderDate)) == 0 {
		_ = c.enc.WriteField(hpack.HeaderField{Name: "date", Value: c.dateValue(st.start)})
	}
	c.writeBlockLocked(st.id, endStream)
}

// writeTrailersLocked ends st with its trailer fields (those the handler
// declared and set, see takeTrailers) in a HEADERS frame with END_STREAM,
// charged as the HTTP/1.1 trailer section. It reports false, writing
// nothing, when there are none.
func (c *h2Conn) writeTrailersLocked(st *h2Stream) bool {
	h := &st.ctx.Response.Header
	c.hbuf.Reset()
	for name := range h.Trailers() {
		c.visitHeader(name, h.PeekBytes(name))
	}
	if c.hbuf.Len() == 0 {
		return false
	}
	st.headerBytes += len(h.TrailerHeader())
	c.writeBlockLocked(st.id, true)
	return true
}

// writeBlockLocked frames the header block in hbuf: HEADERS, then
// CONTINUATION frames for what does not fit the client's frame size.
func (c *h2Conn) writeBlockLocked(id uint32, endStream bool) {
	block := c.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		n := min(len(block), c.peerFrame)
		frag, last := block[:n], n == len(block)
		if first {
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: endStream, EndHeaders: last})
			first = false
		} else {
			_ = c.fr.WriteContinuation(id, last, frag)
		}
		block = block[n:]
	}
}

// visitHeader encodes one response field (ResponseHeader.VisitAll).
func (c *h2Conn) visitHeader(k, v []byte) {
	if h2HopByHop[string(k)] {
		return
	}
	name, ok := c.names[string(k)]
	if !ok {
		name = strings.ToLower(string(k))
		if len(c.names) >= h2InternCap {
			clear(c.names)
		}
		c.names[string(k)] = name
	}
	if len(v) > h2InternMax {
		// Never indexed: the encoder keeps no reference to v.
		_ = c.enc.WriteField(hpack.HeaderField{Name: name, Value: unsafe.String(unsafe.SliceData(v), len(v)), Sensitive: true})
		return
	}
	value, ok := c.values[string(v)]
	if !ok {
		value = string(v)
		if len(c.values) >= h2InternCap {
			clear(c.values)
		}
		c.values[value] = value
	}
	_ = c.enc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

// dateValue is the Date of a response made at t, formatted once a second.
func (c *h2Conn) dateValue(t time.Time) string {
	if sec := t.Unix(); sec != c.dateAt || c.dateS == "" {
		c.dateAt = sec
		c.dateS = string(t.UTC().AppendFormat(c.date[:0], http.TimeFormat))
	}
	return c.dateS
}
