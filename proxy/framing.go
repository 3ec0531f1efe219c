package proxy

// Strict HTTP/1.1 framing (RFC 9112). fasthttp parses leniently: it accepts
// Transfer-Encoding together with Content-Length, header names with spaces,
// obs-fold and bare LF line ends, and with StreamRequestBody it leaves a body
// the handler did not read on the connection, where it is parsed as the next
// request. Every one of those lets a stranger make tollgate and the next hop
// disagree about where a request ends (request smuggling). This file closes
// them: checkFraming rejects ambiguous requests before anything routes them,
// finishBody drains or refuses an unread body after the handler, and the
// connection (meteredConn) rejects bare-LF header blocks as they arrive and
// lingers before closing so the last response is not lost to a reset.

import (
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
)

const (
	// drainBytes is the most of an unread request body read and discarded to
	// keep the connection alive (nginx discards bodies the same way). A
	// longer body closes the connection instead.
	drainBytes = 64 << 10
	// drainTime bounds how long that drain may take.
	drainTime = time.Second
	// lingerBytes and lingerTime bound what a connection closed with unread
	// input still reads after its last response (nginx's lingering_close):
	// closing a socket with unread bytes sends a reset, which can destroy the
	// response before the client has read it.
	lingerBytes = 256 << 10
	lingerTime  = 2 * time.Second
)

var (
	strChunked          = []byte("chunked")
	strClose            = []byte("close")
	strConnection       = []byte(fasthttp.HeaderConnection)
	strTransferEncoding = []byte(fasthttp.HeaderTransferEncoding)
	strHTTPScheme       = []byte("http://")
	strHTTPSScheme      = []byte("https://")
)

// checkFraming validates what fasthttp parsed leniently. It returns 0 for a
// request that may be served, else the status to answer with, after which
// the connection must be closed (the body, if any, is never read):
//
//   - 400: a header line that does not end in CRLF, a line folded with
//     obs-fold, a field name that is not a token (a space in it or before
//     the colon), Transfer-Encoding together with Content-Length, a
//     Transfer-Encoding whose last coding is not "chunked" or that an
//     HTTP/1.0 request carries, differing Content-Length values, an
//     absolute-form target that is not http or https;
//   - 501: a transfer coding other than chunked before the final chunked
//     (RFC 9112 §6.1: tollgate decodes none).
//
// It also makes "close" anywhere in any Connection line close the
// connection, and for an absolute-form target replaces Host with the
// target's authority (RFC 9112 §3.2.2). It does not allocate.
func checkFraming(ctx *fasthttp.RequestCtx) int {
	if mc := metered(ctx.Conn()); mc != nil && mc.head.bad {
		return fasthttp.StatusBadRequest // a bare LF, in the request line too
	}
	h := &ctx.Request.Header
	raw := h.RawHeaders()
	var cl, lastCoding []byte
	nTE, nCL, codings := 0, 0, 0
	for len(raw) > 0 {
		// One pass per line: the field name's token characters up to the
		// colon, then the line end; only the three framing fields (told
		// apart by their length first) look at their value.
		n := 0
		for n < len(raw) && raw[n] < 0x80 && tokenChars[raw[n]] {
			n++
		}
		i := bytes.IndexByte(raw[n:], '\n')
		if i < 0 {
			return fasthttp.StatusBadRequest
		}
		line := raw[:n+i]
		raw = raw[n+i+1:]
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return fasthttp.StatusBadRequest // bare LF
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			break // the blank line ending the block
		}
		// A name that is not a token (a space in it or before the colon, a
		// bare CR) or empty (obs-fold: the line starts with SP or HTAB).
		if n == 0 || n >= len(line) || line[n] != ':' {
			return fasthttp.StatusBadRequest
		}
		name, value := line[:n], line[n+1:]
		if bytes.IndexByte(value, '\r') >= 0 {
			return fasthttp.StatusBadRequest // bare CR
		}
		switch len(name) {
		case len(strTransferEncoding):
			if !bytes.EqualFold(name, strTransferEncoding) {
				break
			}
			nTE++
			for token := range headerTokens(bytes.TrimSpace(value)) {
				codings++
				lastCoding = token
			}
		case len(strContentLength):
			if !bytes.EqualFold(name, strContentLength) {
				break
			}
			value = bytes.TrimSpace(value)
			if nCL > 0 && !bytes.Equal(cl, value) {
				return fasthttp.StatusBadRequest
			}
			nCL++
			cl = value
		case len(strConnection):
			if !bytes.EqualFold(name, strConnection) {
				break
			}
			for token := range headerTokens(bytes.TrimSpace(value)) {
				if bytes.EqualFold(token, strClose) {
					ctx.SetConnectionClose()
				}
			}
		}
	}
	if nTE > 0 {
		if nCL > 0 || !h.IsHTTP11() {
			return fasthttp.StatusBadRequest
		}
		if status := checkTransferCoding(codings, lastCoding); status != 0 {
			return status
		}
	}
	return checkTarget(ctx)
}

// checkTarget checks the request target: origin form, "*", or an absolute
// http(s) URL whose authority then becomes the Host.
func checkTarget(ctx *fasthttp.RequestCtx) int {
	h := &ctx.Request.Header
	if uri := h.RequestURI(); len(uri) > 0 && uri[0] != '/' && !(len(uri) == 1 && uri[0] == '*') {
		if !hasPrefixFold(uri, strHTTPScheme) && !hasPrefixFold(uri, strHTTPSScheme) {
			return fasthttp.StatusBadRequest
		}
		// Absolute form: the target's authority is the Host.
		host := ctx.URI().Host()
		if len(host) == 0 {
			return fasthttp.StatusBadRequest
		}
		h.SetHostBytes(host)
	}
	return 0
}

// checkTransferCoding checks the Transfer-Encoding list (all its lines): of
// n codings, the last one last. Exactly "chunked" is served; "x, chunked" is
// a coding tollgate does not decode (501); anything not ending in chunked
// cannot be framed (400).
func checkTransferCoding(n int, last []byte) int {
	switch {
	case n == 0 || !bytes.EqualFold(last, strChunked):
		return fasthttp.StatusBadRequest
	case n > 1:
		return fasthttp.StatusNotImplemented
	}
	return 0
}

func hasPrefixFold(b, prefix []byte) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], prefix)
}

// tokenChars are the bytes of an RFC 9110 token (a valid field name).
var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// hasBody reports whether the request announced a body.
func hasBody(h *fasthttp.RequestHeader) bool {
	n := h.ContentLength()
	return n > 0 || n == -1
}

// reject answers status for a request whose body must not be read, and
// closes the connection after the answer (lingering, see meteredConn).
func (e *ErrorPages) reject(ctx *fasthttp.RequestCtx, status int) {
	ctx.SetConnectionClose()
	if mc := metered(ctx.Conn()); mc != nil && hasBody(&ctx.Request.Header) {
		mc.linger.Store(true)
	}
	e.writeError(ctx, status)
}

// finishBody makes sure the request body is not left on an HTTP/1.1
// connection after the response: a small remainder is read and discarded
// (within drainBytes and drainTime), anything else closes the connection.
// Streams other than a client connection's (an h2 stream) need nothing.
func finishBody(ctx *fasthttp.RequestCtx) {
	mc := metered(ctx.Conn())
	if mc == nil || !hasBody(&ctx.Request.Header) {
		return
	}
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return // read whole by the handler
	}
	if ctx.Request.Header.ContentLength() == -1 {
		// fasthttp takes a chunked body cut off in its trailer section by
		// the end of input for a complete one; the bytes it did not take
		// would be parsed as a request. Once the client has closed its
		// side, nothing after this body can be a request worth answering.
		defer func() {
			if mc.head.eof {
				ctx.SetConnectionClose()
			}
		}()
	}
	if ctx.Response.Header.ConnectionClose() {
		mc.linger.Store(true)
		return
	}
	var probe [1]byte
	if ctx.Request.Header.ContentLength() > drainBytes {
		// Too long to drain. Unless the handler read it all (the stream is
		// at EOF), close without waiting for more of it.
		_ = mc.SetReadDeadline(time.Now())
		if m, err := stream.Read(probe[:]); m == 0 && errors.Is(err, io.EOF) {
			return
		}
	} else {
		_ = mc.SetReadDeadline(time.Now().Add(drainTime))
		n, err := io.Copy(io.Discard, io.LimitReader(stream, drainBytes+1))
		if err == nil && n <= drainBytes {
			if m, err := stream.Read(probe[:]); m == 0 && errors.Is(err, io.EOF) {
				return
			}
		}
	}
	ctx.SetConnectionClose()
	mc.linger.Store(true)
}

// errBareLF fails the read of a request head that has a line ending in a
// bare LF: fasthttp would wait for a CRLF CRLF that never comes (and
// answer 408 after the read timeout); errorHandler answers 400 at once.
var errBareLF = errors.New("proxy: request head with a bare LF line end")

// headScanner watches the bytes of an HTTP/1.1 connection while they are a
// request head (from the connection's start, and again after each request
// whose body was consumed) for a line feed without its carriage return.
// It stops at the blank line ending the head: what follows is a body, where
// any byte is allowed. Bytes fasthttp had already buffered when a request
// ended (pipelined requests) are not seen, nor the header lines of a head
// that one read holds whole (it ends in CRLF CRLF, so fasthttp parses it at
// once): checkFraming rejects a bare LF in those, the scanner checks their
// request line, which checkFraming cannot see. Used by the connection's
// goroutine only.
type headScanner struct {
	on      bool
	bad     bool
	last    byte // the last byte scanned
	lineLen int  // bytes since the last LF
	started bool // a non-empty line was seen
	eof     bool // the client closed its side (set by meteredConn.Read)
}

func (s *headScanner) reset() {
	*s = headScanner{on: true, last: '\n', eof: s.eof}
}

func (s *headScanner) scan(p []byte) {
	if s.last == '\n' && s.lineLen == 0 && !s.started && bytes.HasSuffix(p, crlfCRLF) {
		// The whole head in one read (what a client that waits for each
		// answer sends): only the request line, and the empty lines a
		// client may send before it, are checked here; checkFraming checks
		// every header line's CRLF once fasthttp has parsed the head, which
		// it does without waiting, the read ending in a blank line.
		s.scanStart(p)
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.lineLen += len(p)
			s.last = p[len(p)-1]
			return
		}
		prev := s.last
		if i > 0 {
			prev = p[i-1]
		}
		lineLen := s.lineLen + i // bytes before this LF, CR included
		s.lineLen, s.last = 0, '\n'
		p = p[i+1:]
		if prev != '\r' {
			s.bad = true
			s.on = false
			return
		}
		if lineLen > 1 {
			s.started = true
		} else if s.started {
			s.on = false // the blank line: a body may follow
			return
		}
	}
}

var crlfCRLF = []byte("\r\n\r\n")

// scanStart checks the lines of p up to the request line for a bare LF.
// p ends in CRLF CRLF, so the head ends within it: the scanner stops.
func (s *headScanner) scanStart(p []byte) {
	s.on = false
	for start := 0; ; {
		i := bytes.IndexByte(p[start:], '\n')
		if i < 0 {
			return // unreachable: p ends in LF
		}
		if i == 0 || p[start+i-1] != '\r' {
			s.bad = true
			return
		}
		if i > 1 {
			s.started = true
			return // the request line
		}
		start += i + 1
		if start == len(p) {
			s.on = true // only empty lines so far: the head has not begun
			return
		}
	}
}

// nextHead makes the connection watch the next request head, when the
// request just served leaves it open for another request: not after a
// hijack (a WebSocket tunnel carries any bytes).
func nextHead(ctx *fasthttp.RequestCtx) {
	mc := metered(ctx.Conn())
	switch {
	case mc == nil:
	case ctx.Hijacked():
		mc.head.on = false
		mc.endLazyRead() // the tunnel's goroutines read and set deadlines
	case !ctx.Response.Header.ConnectionClose():
		mc.head.reset()
	}
}

// expectContinue decides an "Expect: 100-continue" request before its body
// is sent: 100 when the request goes where its body is read (an upstream
// site that is not blocked, an internal endpoint within its body limit);
// otherwise the whole request is answered now, without reading the body,
// and its final status returned (fasthttp then closes the connection).
func (p *Proxy) expectContinue(ctx *fasthttp.RequestCtx) int {
	if checkFraming(ctx) == 0 && ctx.Request.Header.ContentLength() <= p.limits.MaxBodyBytes {
		var buf [sites.MaxHostLen + 8]byte
		t, _, status := p.route(ctx, buf[:0], nil)
		switch {
		case status != 0:
		case t.to == toSite:
			if r := t.site; r.rt.up != nil && r.rt.err == nil && !blocked(r.org, r.gate) {
				return fasthttp.StatusContinue
			}
		case t.to == toInternal:
			if t.internal.MaxBody > 0 && ctx.Request.Header.ContentLength() <= t.internal.MaxBody {
				return fasthttp.StatusContinue
			}
		}
	}
	p.Handler(ctx)
	if mc := metered(ctx.Conn()); mc != nil {
		mc.linger.Store(true) // a client that sends its body anyway reads the answer, not a reset
	}
	return ctx.Response.StatusCode()
}

// blocked reports whether enforce would answer the org's requests itself.
func blocked(org *sites.Org, gate *access.Gate) bool {
	switch {
	case org == nil:
		return true
	case gate == nil:
		return org.State == sites.StateSuspended
	}
	return gate.Decision().Blocks()
}
