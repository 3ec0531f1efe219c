package proxy

// Header handling of the reverse proxy: X-Forwarded-* and Forwarded, and the
// hop-by-hop headers that never cross it.

import (
	"bytes"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// setForwarded sets X-Forwarded-For/-Proto/-Host, X-Real-IP and Forwarded
// (RFC 7239). Values a visitor sent are kept (and X-Forwarded-For/Forwarded
// appended to) only when the peer is a trusted proxy; from anyone else they
// are replaced, and the other headers apps read a client's address, scheme
// or path prefix from (clientHeaders), as well as every header whose name
// has an underscore (a server may read X_Forwarded_For as X-Forwarded-For;
// nginx drops them too), are removed, so an upstream can believe them.
// present tells which of the replaced fields h has (copyRequestHeader).
func (u *upstream) setForwarded(ctx *fasthttp.RequestCtx, h *fasthttp.RequestHeader, peer netip.Addr, trusted bool, present uint8) {
	// A field is deleted before it is set: Set replaces its first line
	// only, and a visitor may have sent several.
	del := func(bit uint8, name string) {
		if present&bit != 0 {
			h.Del(name)
		}
	}
	if !trusted || len(h.Peek(headerXRealIP)) == 0 {
		del(fwdRealIP, headerXRealIP)
		if peer.IsValid() {
			var b [64]byte
			h.SetCanonical(keyXRealIP, peer.AppendTo(b[:0]))
		}
	}
	proto := strHTTP
	if ctx.IsTLS() {
		proto = strHTTPS
	}
	host := ctx.Request.Header.Host()

	var scratch [256]byte
	buf := scratch[:0]
	if trusted {
		buf = appendJoined(buf, ctx.Request.Header.PeekAll(fasthttp.HeaderXForwardedFor))
	}
	if peer.IsValid() {
		if len(buf) > 0 {
			buf = append(buf, ", "...)
		}
		buf = peer.AppendTo(buf)
	}
	del(fwdFor, fasthttp.HeaderXForwardedFor)
	if len(buf) > 0 {
		h.SetCanonical(keyXForwardedFor, buf)
	}

	if !trusted || len(h.Peek(fasthttp.HeaderXForwardedProto)) == 0 {
		del(fwdProto, fasthttp.HeaderXForwardedProto)
		h.SetCanonical(keyXForwardedProto, proto)
	}
	if !trusted || len(h.Peek(fasthttp.HeaderXForwardedHost)) == 0 {
		del(fwdHost, fasthttp.HeaderXForwardedHost)
		if len(host) > 0 {
			h.SetCanonical(keyXForwardedHost, host)
		}
	}

	buf = buf[:0]
	if trusted {
		buf = appendJoined(buf, ctx.Request.Header.PeekAll(fasthttp.HeaderForwarded))
		if len(buf) > 0 {
			buf = append(buf, ", "...)
		}
	}
	buf = appendForwardedElement(buf, peer, host, proto)
	del(fwdForwarded, fasthttp.HeaderForwarded)
	h.SetCanonical(keyForwarded, buf)
}

const headerXRealIP = "X-Real-IP"

// The fields setForwarded sets, in fasthttp's canonical form (SetCanonical
// skips normalizing the name).
var (
	keyXRealIP         = []byte("X-Real-Ip")
	keyXForwardedFor   = []byte(fasthttp.HeaderXForwardedFor)
	keyXForwardedProto = []byte(fasthttp.HeaderXForwardedProto)
	keyXForwardedHost  = []byte(fasthttp.HeaderXForwardedHost)
	keyForwarded       = []byte(fasthttp.HeaderForwarded)
	strHTTP            = []byte("http")
	strHTTPS           = []byte("https")
)

// clientHeaders claim something about the client that only a proxy of the
// operator's may say; from other peers they are removed (X-Forwarded-For,
// -Proto, -Host, X-Real-IP and Forwarded are replaced instead).
var clientHeaders = [...]string{
	"True-Client-IP", "Client-IP", "X-Client-IP", "X-Cluster-Client-IP", "CF-Connecting-IP",
	"Fastly-Client-IP", "X-Original-Forwarded-For", "Forwarded-For", "X-Forwarded",
	"X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Server", "X-Forwarded-Ssl",
	"X-Forwarded-Scheme", "X-Url-Scheme", "Front-End-Https", "X-Original-URL", "X-Rewrite-URL",
}

// What copyRequestHeader knows of a request field's name, as bits.
const (
	fwdRealIP     uint8 = 1 << iota // X-Real-IP (setForwarded replaces these five)
	fwdFor                          // X-Forwarded-For
	fwdProto                        // X-Forwarded-Proto
	fwdHost                         // X-Forwarded-Host
	fwdForwarded                    // Forwarded
	dropAlways                      // hopHeaders, Expect
	dropUntrusted                   // clientHeaders

	fwdAll = fwdRealIP | fwdFor | fwdProto | fwdHost | fwdForwarded
)

// fieldsByLen are the field names copyRequestHeader looks for, by length.
var fieldsByLen = func() (t [25][]namedField) {
	add := func(name string, class uint8) {
		t[len(name)] = append(t[len(name)], namedField{[]byte(name), class})
	}
	for _, name := range hopHeaders {
		add(name, dropAlways)
	}
	add(fasthttp.HeaderExpect, dropAlways)
	for _, name := range clientHeaders {
		add(name, dropUntrusted)
	}
	add(headerXRealIP, fwdRealIP)
	add(fasthttp.HeaderXForwardedFor, fwdFor)
	add(fasthttp.HeaderXForwardedProto, fwdProto)
	add(fasthttp.HeaderXForwardedHost, fwdHost)
	add(fasthttp.HeaderForwarded, fwdForwarded)
	return t
}()

type namedField struct {
	name  []byte
	class uint8
}

// fieldClass is what copyRequestHeader knows of the field name k (0: nothing).
func fieldClass(k []byte) uint8 {
	if len(k) < len(fieldsByLen) {
		for _, f := range fieldsByLen[len(k)] {
			if bytes.EqualFold(k, f.name) {
				return f.class
			}
		}
	}
	return 0
}

// copyRequestHeader fills dst, the request on its way to the upstream, with
// src's method and the fields that cross the proxy, in one pass over src's
// fields: the cost is linear in the size of the head, whatever it holds (a
// copy followed by one delete per dropped name would be quadratic, as each
// delete rewrites the field list). Dropped are the hop-by-hop fields
// (hopHeaders) and those a Connection field names (except the ones the
// request cannot be framed without, isEndToEndRequired), Content-Length
// (fasthttp's client frames the body) and Expect (fasthttp answered
// "Expect: 100-continue" already, and its client sends the body without
// waiting for the upstream's 100); from a peer that is not a trusted proxy
// also clientHeaders and every name with an underscore. It returns which of
// the fields setForwarded replaces dst has (fwd bits).
func copyRequestHeader(dst, src *fasthttp.RequestHeader, trusted bool) (present uint8) {
	dst.Reset()
	dst.SetNoDefaultContentType(true)
	dst.SetMethodBytes(src.Method())
	dst.SetRequestURIBytes(src.RequestURI())
	var listed nameSet
	for name := range connectionTokens(src) {
		if !isEndToEndRequired(name) {
			listed.add(name)
		}
	}
	for k, v := range src.All() {
		c := fieldClass(k)
		if c&dropAlways != 0 || !trusted && (c&dropUntrusted != 0 || bytes.IndexByte(k, '_') >= 0) ||
			bytes.EqualFold(k, strContentLength) || listed.has(k) {
			continue
		}
		present |= c & fwdAll
		dst.AddBytesKV(k, v)
	}
	return present
}

// nameSet is a set of field names compared without regard to case: the
// first few in place, more in a map (a Connection field listing that many
// names is rare, and hostile).
type nameSet struct {
	few  [8][]byte
	n    int
	many map[string]struct{}
}

func (s *nameSet) add(name []byte) {
	if s.n < len(s.few) {
		s.few[s.n] = name
		s.n++
		return
	}
	if s.many == nil {
		s.many = make(map[string]struct{})
	}
	var scratch [64]byte
	s.many[string(appendLower(scratch[:0], name))] = struct{}{}
}

func (s *nameSet) has(name []byte) bool {
	for _, f := range s.few[:s.n] {
		if bytes.EqualFold(f, name) {
			return true
		}
	}
	if s.many == nil {
		return false
	}
	var scratch [64]byte
	_, ok := s.many[string(appendLower(scratch[:0], name))]
	return ok
}

// appendLower appends name with ASCII letters in lower case.
func appendLower(dst, name []byte) []byte {
	for _, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func (u *upstream) isTrusted(peer netip.Addr) bool {
	for _, p := range u.trusted {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// appendForwardedElement appends `for=…;host="…";proto=…` (RFC 7239 §4).
func appendForwardedElement(dst []byte, peer netip.Addr, host, proto []byte) []byte {
	dst = append(dst, "for="...)
	switch {
	case !peer.IsValid():
		dst = append(dst, "unknown"...)
	case peer.Is6():
		dst = append(dst, `"[`...)
		dst = peer.AppendTo(dst)
		dst = append(dst, `]"`...)
	default:
		dst = peer.AppendTo(dst)
	}
	if len(host) > 0 {
		dst = append(dst, `;host="`...)
		for _, c := range host {
			if c == '"' || c == '\\' {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
		}
		dst = append(dst, '"')
	}
	dst = append(dst, ";proto="...)
	return append(dst, proto...)
}

func appendJoined(dst []byte, values [][]byte) []byte {
	for _, v := range values {
		if len(v) == 0 {
			continue
		}
		if len(dst) > 0 {
			dst = append(dst, ", "...)
		}
		dst = append(dst, v...)
	}
	return dst
}

// copyResponseHeader copies the status and the end-to-end headers of src.
// Content-Length and Transfer-Encoding follow from SetBodyStream, Date and
// Connection are the server's.
func copyResponseHeader(dst, src *fasthttp.ResponseHeader) {
	dst.SetStatusCode(src.StatusCode())
	src.SetNoDefaultContentType(true)
	if len(src.ContentType()) == 0 {
		dst.SetNoDefaultContentType(true) // no invented text/plain
	}
	listed := listedNames(src.PeekAll(fasthttp.HeaderConnection))
	for k, v := range src.All() {
		if isHopHeader(k) || bytes.EqualFold(k, strContentLength) || listed.has(k) {
			continue
		}
		dst.AddBytesKV(k, v)
	}
}

// hopHeaders apply to one connection only and are never forwarded, in
// either direction (RFC 9110 §7.6.1; RFC 7230 §6.1). Headers named in
// Connection are dropped as well.
var hopHeaders = [...]string{
	fasthttp.HeaderConnection,
	"Proxy-Connection", // non-standard, sent by old clients
	fasthttp.HeaderKeepAlive,
	fasthttp.HeaderProxyAuthenticate,
	fasthttp.HeaderProxyAuthorization,
	fasthttp.HeaderTE,
	fasthttp.HeaderTrailer,
	fasthttp.HeaderTransferEncoding,
	fasthttp.HeaderUpgrade,
}

var strContentLength = []byte(fasthttp.HeaderContentLength)

func isHopHeader(name []byte) bool {
	for _, h := range hopHeaders {
		if len(name) == len(h) && bytes.EqualFold(name, []byte(h)) {
			return true
		}
	}
	return false
}

// listedNames is the set of names the Connection header values list.
func listedNames(values [][]byte) (s nameSet) {
	for _, v := range values {
		for token := range headerTokens(v) {
			s.add(token)
		}
	}
	return s
}

// headerTokens yields the non-empty elements of a comma-separated header value.
func headerTokens(v []byte) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(v) > 0 {
			var token []byte
			token, v, _ = bytes.Cut(v, []byte{','})
			token = bytes.TrimSpace(token)
			if len(token) > 0 && !yield(token) {
				return
			}
		}
	}
}

// connectionTokens yields the names listed in every Connection line of a
// request. An HTTP/1.1 request's are read from its raw header lines:
// fasthttp keeps "close" as a flag, and a later Connection line can hide an
// earlier one from PeekAll. Requests built from h2 streams have no raw
// lines; their parsed values are complete.
func connectionTokens(h *fasthttp.RequestHeader) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		raw := h.RawHeaders()
		if len(raw) == 0 {
			for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
				for token := range headerTokens(v) {
					if !yield(token) {
						return
					}
				}
			}
			return
		}
		for len(raw) > 0 {
			line := raw
			if i := bytes.IndexByte(raw, '\n'); i >= 0 {
				line, raw = raw[:i], raw[i+1:]
			} else {
				raw = nil
			}
			name, value, ok := bytes.Cut(line, []byte{':'})
			if !ok || !bytes.EqualFold(name, strConnection) {
				continue
			}
			for token := range headerTokens(value) {
				if !yield(token) {
					return
				}
			}
		}
	}
}
