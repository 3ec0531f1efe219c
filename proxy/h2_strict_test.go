package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2RawConn is an h2 client on a raw TLS connection to a tlsHarness: it
// writes frames with http2.Framer and an HPACK encoder of its own, so it
// can send what no well-behaved client library sends.
type h2RawConn struct {
	t    *testing.T
	conn *tls.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	buf  bytes.Buffer // enc's output
	next uint32       // next client stream id
	// settings are the server's SETTINGS values as received.
	settings map[http2.SettingID]uint32
}

func dialH2Raw(t *testing.T, h *tlsHarness) *h2RawConn {
	t.Helper()
	return dialH2RawName(t, h, "www.example")
}

// dialH2RawName is dialH2Raw with name as SNI.
func dialH2RawName(t *testing.T, h *tlsHarness, name string) *h2RawConn {
	t.Helper()
	conn, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: h.pool, ServerName: name, NextProtos: []string{"h2"}})
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	_, err = io.WriteString(conn, http2.ClientPreface)
	must(t, err)
	c := &h2RawConn{t: t, conn: conn, fr: http2.NewFramer(conn, conn), next: 1, settings: map[http2.SettingID]uint32{}}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.buf)
	must(t, c.fr.WriteSettings())
	return c
}

// block HPACK-encodes a GET of / on www.example followed by extra, pairs
// of name and value.
func (c *h2RawConn) block(method string, extra ...string) []byte {
	c.buf.Reset()
	fields := []string{":method", method, ":scheme", "https", ":path", "/", ":authority", "www.example"}
	fields = append(fields, extra...)
	for i := 0; i < len(fields); i += 2 {
		must(c.t, c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}))
	}
	return bytes.Clone(c.buf.Bytes())
}

func (c *h2RawConn) stream() uint32 {
	id := c.next
	c.next += 2
	return id
}

// h2Answer is how the server ended a stream: RST_STREAM with code, or a
// response with status.
type h2Answer struct {
	rst    bool
	code   http2.ErrCode
	status int
}

func (a h2Answer) String() string {
	if a.rst {
		return "RST_STREAM " + a.code.String()
	}
	return "response " + strconv.Itoa(a.status)
}

// answer reads frames until the server ends stream id, acknowledging its
// SETTINGS and ignoring other streams' frames. A GOAWAY fails the test:
// the connection must survive a stream error.
func (c *h2RawConn) answer(id uint32) h2Answer {
	c.t.Helper()
	must(c.t, c.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	var a h2Answer
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("stream %d: reading frames: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				f.ForeachSetting(func(s http2.Setting) error { c.settings[s.ID] = s.Val; return nil })
				must(c.t, c.fr.WriteSettingsAck())
			}
		case *http2.GoAwayFrame:
			c.t.Fatalf("stream %d: GOAWAY %v %q", id, f.ErrCode, f.DebugData())
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return h2Answer{rst: true, code: f.ErrCode}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				a.status, _ = strconv.Atoi(f.PseudoValue("status"))
				if f.StreamEnded() {
					return a
				}
			}
		case *http2.DataFrame:
			if f.StreamID == id && f.StreamEnded() {
				return a
			}
		}
	}
}

// TestH2ConnectionSpecificFieldsAreStreamErrors: an h2 request carrying a
// connection-specific header field, or TE with any value other than
// "trailers", is answered with RST_STREAM PROTOCOL_ERROR (RFC 9113
// §8.2.2), never with a response, and never reaches the handler; the
// connection stays up and serves the next request. The header block may be
// split over CONTINUATION frames, padded, refer to the dynamic table, or
// fill a whole frame.
func TestH2ConnectionSpecificFieldsAreStreamErrors(t *testing.T) {
	h := newTLSHarness(t, "http://127.0.0.1:1")
	c := dialH2Raw(t, h)
	rst := h2Answer{rst: true, code: http2.ErrCodeProtocol}
	ok := h2Answer{status: 200}
	// Sized so the block with padding fills a frame of h2MaxFrameSize, and
	// the header list stays under the server's limit: raw literal bytes
	// ('X' takes 8 bits in Huffman code, so it is sent as is).
	big := strings.Repeat("X", 16200)

	cases := []struct {
		name  string
		extra []string
		send  func(id uint32, block []byte)
		want  h2Answer
	}{
		{"plain GET", nil, nil, ok},
		{"connection", []string{"connection", "keep-alive"}, nil, rst},
		{"connection again, from the dynamic table", []string{"connection", "keep-alive"}, nil, rst},
		{"connection with an empty value", []string{"connection", ""}, nil, rst},
		{"keep-alive", []string{"keep-alive", "timeout=5"}, nil, rst},
		{"proxy-connection", []string{"proxy-connection", "keep-alive"}, nil, rst},
		{"transfer-encoding", []string{"transfer-encoding", "chunked"}, nil, rst},
		{"upgrade", []string{"upgrade", "websocket"}, nil, rst},
		{"te: trailers", []string{"te", "trailers"}, nil, ok},
		{"te: gzip", []string{"te", "gzip"}, nil, rst},
		{"te: trailers, deflate", []string{"trailers", "test", "te", "trailers, deflate"}, nil, rst},
		{"te twice", []string{"te", "trailers", "te", "trailers"}, nil, rst},
		{"GET after the refusals", []string{"accept", "*/*"}, nil, ok},
		{"split over HEADERS and two CONTINUATIONs", []string{"x-a", "1", "connection", "close", "x-b", "2"},
			func(id uint32, b []byte) {
				must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b[:5], EndStream: true}))
				must(t, c.fr.WriteContinuation(id, false, b[5:len(b)-3]))
				must(t, c.fr.WriteContinuation(id, true, b[len(b)-3:]))
			}, rst},
		{"padded, with priority", []string{"te", "compress"},
			func(id uint32, b []byte) {
				must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndStream: true, EndHeaders: true,
					PadLength: 200, Priority: http2.PriorityParam{Weight: 15}}))
			}, rst},
		{"padded, with priority, allowed", []string{"te", "trailers"},
			func(id uint32, b []byte) {
				must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndStream: true, EndHeaders: true,
					PadLength: 200, Priority: http2.PriorityParam{Weight: 15}}))
			}, ok},
		{"a frame of h2MaxFrameSize", []string{"x-pad", big, "connection", "keep-alive"},
			func(id uint32, b []byte) {
				pad := h2MaxFrameSize - 1 - len(b)
				if pad < 0 || pad > 255 {
					t.Fatalf("a block of %d bytes does not pad to a frame of %d", len(b), h2MaxFrameSize)
				}
				must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndStream: true, EndHeaders: true,
					PadLength: uint8(pad)}))
			}, rst},
		{"POST with a body", []string{"content-length", "5", "transfer-encoding", "identity"},
			func(id uint32, b []byte) {
				must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndHeaders: true}))
				must(t, c.fr.WriteData(id, true, []byte("hello")))
			}, rst},
		{"GET after a refused body", nil, nil, ok},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			before := testutil.ToFloat64(h.proxy.metrics.h2Requests)
			id := c.stream()
			method := "GET"
			if strings.HasPrefix(tc.name, "POST") {
				method = "POST"
			}
			b := c.block(method, tc.extra...)
			if tc.send != nil {
				tc.send(id, b)
			} else {
				must(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndStream: true, EndHeaders: true}))
			}
			if got := c.answer(id); got != tc.want {
				t.Fatalf("stream %d: %v, want %v", id, got, tc.want)
			}
			handled := testutil.ToFloat64(h.proxy.metrics.h2Requests) - before
			if want := map[bool]float64{true: 0, false: 1}[tc.want.rst]; handled != want {
				t.Fatalf("the handler saw %v requests, want %v", handled, want)
			}
		})
	}
	// h2StrictConn's HPACK decoder follows the server's only with the same
	// table size, and holds frames of at most h2MaxFrameSize.
	if got := c.settings[http2.SettingHeaderTableSize]; got != h2HeaderTableSize {
		t.Errorf("SETTINGS_HEADER_TABLE_SIZE %d, want %d", got, h2HeaderTableSize)
	}
	if got := c.settings[http2.SettingMaxFrameSize]; got != h2MaxFrameSize {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE %d, want %d", got, h2MaxFrameSize)
	}
}

// TestH2StrictConnPassesFramesUnchanged: every byte a client sends reaches
// the h2 server as sent, read in pieces of any size, unless a header
// block holds a connection-specific field; then only that block's last
// frame grows by two empty host fields.

// readerConn is a net.Conn that reads from r; nothing else is used.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Frame types and flags of RFC 9113 §6 for hand-made frames.
const (
	h2FrameHeaders   = 0x1
	h2FlagEndHeaders = 0x4
	h2FlagPadded     = 0x8
	h2FlagPriority   = 0x20
)

// TestH2MalformedInputEndsConnection: input that makes the connection's
// state unknowable (a frame out of order, padding longer than the frame,
// an HPACK error, a header-block frame over h2MaxFrameSize) ends the
// connection with GOAWAY and the code RFC 9113 names; no later stream on
// it reaches the handler.
func TestH2MalformedInputEndsConnection(t *testing.T) {
	h := newTLSHarness(t, "http://127.0.0.1:1")
	var hb bytes.Buffer
	bad := func() []byte {
		hb.Reset()
		enc := hpack.NewEncoder(&hb)
		enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
		enc.WriteField(hpack.HeaderField{Name: "connection", Value: "close"})
		return bytes.Clone(hb.Bytes())
	}()
	for _, tc := range []struct {
		name  string
		frame func(fr *http2.Framer, raw io.Writer)
		code  http2.ErrCode
	}{
		{"CONTINUATION without HEADERS", func(fr *http2.Framer, _ io.Writer) {
			must(t, fr.WriteContinuation(1, true, bad))
		}, http2.ErrCodeProtocol},
		{"HEADERS inside an open block", func(fr *http2.Framer, _ io.Writer) {
			must(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: bad[:1]}))
			must(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: bad, EndHeaders: true}))
		}, http2.ErrCodeProtocol},
		{"CONTINUATION of another stream", func(fr *http2.Framer, _ io.Writer) {
			must(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: bad[:1]}))
			must(t, fr.WriteContinuation(3, true, bad[1:]))
		}, http2.ErrCodeProtocol},
		{"padding longer than the frame", func(_ *http2.Framer, raw io.Writer) {
			raw.Write([]byte{0, 0, 2, h2FrameHeaders, h2FlagEndHeaders | h2FlagPadded, 0, 0, 0, 1, 9, 0x82})
		}, http2.ErrCodeProtocol},
		{"priority longer than the frame", func(_ *http2.Framer, raw io.Writer) {
			raw.Write([]byte{0, 0, 2, h2FrameHeaders, h2FlagEndHeaders | h2FlagPriority, 0, 0, 0, 1, 0, 0})
		}, http2.ErrCodeFrameSize},
		{"HPACK index 0", func(fr *http2.Framer, _ io.Writer) {
			must(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x80}, EndHeaders: true}))
		}, http2.ErrCodeCompression},
		{"HPACK field cut short", func(fr *http2.Framer, _ io.Writer) {
			must(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: bad[:len(bad)-2], EndHeaders: true}))
		}, http2.ErrCodeCompression},
		{"HEADERS over h2MaxFrameSize", func(fr *http2.Framer, _ io.Writer) {
			must(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: append(bytes.Repeat([]byte{0x82}, h2MaxFrameSize), bad...), EndHeaders: true}))
		}, http2.ErrCodeFrameSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialH2Raw(t, h)
			c.t = t
			before := testutil.ToFloat64(h.proxy.metrics.h2Requests)
			c.fr.AllowIllegalWrites = true
			tc.frame(c.fr, c.conn)
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: c.block("GET"), EndStream: true, EndHeaders: true})
			if code := c.goAway(); code != tc.code {
				t.Fatalf("GOAWAY %v, want %v", code, tc.code)
			}
			if n := testutil.ToFloat64(h.proxy.metrics.h2Requests) - before; n != 0 {
				t.Fatalf("the handler saw %v requests", n)
			}
		})
	}
}

// goAway reads frames until GOAWAY and the end of the connection and
// returns the GOAWAY's code.
func (c *h2RawConn) goAway() http2.ErrCode {
	c.t.Helper()
	must(c.t, c.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	code, seen := http2.ErrCode(0), false
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			if !seen {
				c.t.Fatalf("connection ended without GOAWAY: %v", err)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.t.Fatal("the connection stays open after GOAWAY")
			}
			return code
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			code, seen = f.ErrCode, true
		}
	}
}

// TestH2WindowOpensForManyStreams: several responses waiting on the loop
// for a shut window all complete, whole, when one SETTINGS frame opens it
// for all of them at once; the connection serves on.
func TestH2WindowOpensForManyStreams(t *testing.T) {
	h := newTLSHarnessLimits(t, Limits{})
	c := dialH2Raw(t, h)
	c.t = t
	must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
	want := map[uint32]bool{}
	for range 5 {
		want[c.get("/4k.bin")] = true
	}
	// 5 × 4 KiB fit the connection's initial window: one pass sends them all.
	must(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535}))
	must(t, c.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	got := map[uint32]int{}
	for len(want) > 0 {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("streams %v unanswered: %v", want, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				must(t, c.fr.WriteSettingsAck())
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v %q", f.ErrCode, f.DebugData())
		case *http2.RSTStreamFrame:
			t.Fatalf("RST_STREAM %v on stream %d", f.ErrCode, f.StreamID)
		case *http2.DataFrame:
			got[f.StreamID] += len(f.Data())
			if f.StreamEnded() {
				if got[f.StreamID] != 4096 {
					t.Fatalf("stream %d ended after %d bytes", f.StreamID, got[f.StreamID])
				}
				delete(want, f.StreamID)
			}
		}
	}
	if a := c.answer(c.get("/4k.bin")); a.status != 200 {
		t.Fatalf("next stream: %v", a)
	}
}
