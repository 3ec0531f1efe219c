package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
)

// FuzzPublicListener feeds arbitrary byte streams to the public listener
// (over loopback TCP, the client's side half-closed after the bytes) and
// checks what a smuggling attempt would break: no panic, and at most one
// response per request that a strict parser (net/http's) sees in the same
// bytes, plus one error answer: bytes that belong to a body are never
// answered as a request of their own.
func FuzzPublicListener(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: www.example\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: www.example\r\nContent-Length: 44\r\n\r\nGET /secret HTTP/1.1\r\nHost: www.example\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: www.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: www.example\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: www.example\r\nTransfer-Encoding: chunked\r\n\r\n2c\r\nGET /secret HTTP/1.1\r\nHost: www.example\r\n\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: www.example\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\nHost: www.example\n\nGET / HTTP/1.1\r\nHost: www.example\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: www.example\r\nConnection: X, close\r\n\r\nGET / HTTP/1.1\r\nHost: www.example\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: www.example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
		"GET http://www.example/ HTTP/1.1\r\nHost: other\r\n\r\n",
		// A chunked body cut off in its trailer by the end of input: the
		// bytes fasthttp leaves were once answered as a request.
		"0 * HTTP/1.1\r\nHost:0\r\nTrAnsfer-EnCoding:Chunked\r\n\r\n0\r\n00",
	} {
		f.Add([]byte(seed))
	}
	h := newHarness(f, Config{}, Limits{ReadTimeout: 2 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go h.proxy.Serve(ln)
	f.Cleanup(func() { ln.Close() })

	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(in); err != nil {
			return // the server closed early: nothing answered
		}
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		out, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no end of the answer within 5s to %q", in)
		}
		responses := countResponses(out)
		strict, rest := countStrictRequests(in)
		if rest {
			strict++ // what the strict parser rejected may get an error answer
		}
		if responses > strict {
			t.Fatalf("%d responses to %q, which a strict parser reads as %d requests:\n%s", responses, in, strict, out)
		}
	})
}

// countStrictRequests counts the requests net/http reads from b, bodies
// included, up to the first it rejects; rest reports bytes it did not
// accept as a whole request.
func countStrictRequests(b []byte) (n int, rest bool) {
	br := bufio.NewReader(bytes.NewReader(b))
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return n, false
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return n, true
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return n, true
		}
		n++
	}
}

// countResponses counts the final responses in b (1xx are interim).
func countResponses(b []byte) int {
	br := bufio.NewReader(bytes.NewReader(b))
	n := 0
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return n
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode >= 200 {
			n++
		}
	}
}

// TestPacedWaitsAreBounded: a throttled write never waits past its write
// deadline, and stops waiting when its connection closes.
func TestPacedWaitsAreBounded(t *testing.T) {
	slow := func() *access.Gate { // 1 KB/s
		g := &access.Gate{}
		g.Set(access.Throttle, 1000)
		return g
	}
	body := make([]byte, 64<<10) // a minute of pacing

	t.Run("write deadline", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		go io.Copy(io.Discard, b)
		mc := newMeteredConn(a)
		defer mc.Close()
		mc.gate.Store(slow())
		_ = mc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		start := time.Now()
		_, err := mc.Write(body)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err %v, want a timeout", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("returned after %v", d)
		}
	})
	t.Run("connection closed", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		go io.Copy(io.Discard, b)
		mc := newMeteredConn(a)
		mc.gate.Store(slow())
		done := make(chan error, 1)
		go func() { _, err := mc.Write(body); done <- err }()
		mc.Close() // before or during the wait: both end the write

		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a write on a closed connection succeeded")
			}
		case <-time.After(2 * time.Second):
			t.Fatal("the paced write still waits after Close")
		}
	})
	t.Run("h2 stream ends", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go io.Copy(io.Discard, b)
		var l Limits
		l.Defaults()
		c := newH2Conn(&Proxy{limits: l}, a)
		c.sendWin = 1 << 30
		done := c.closed
		w := &h2BodyWriter{st: &h2Stream{c: c, id: 1, gate: slow(), sendWin: 1 << 30}}
		errc := make(chan error, 1)
		go func() { _, err := w.Write(body); errc <- err }()
		close(done)
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("a write on an ended stream succeeded")
			}
		case <-time.After(2 * time.Second):
			t.Fatal("the paced h2 write still waits after its stream ended")
		}
	})
}

func TestCheckTransferCoding(t *testing.T) {
	for te, want := range map[string]int{
		"chunked": 0, "Chunked": 0, "gzip, chunked": 501, "chunked, chunked": 501, "chunked, gzip": 400, "identity": 400, ",": 400,
	} {
		n, last := 0, []byte(nil)
		for token := range headerTokens([]byte(te)) {
			n++
			last = token
		}
		if got := checkTransferCoding(n, last); got != want {
			t.Errorf("%q: %d, want %d", te, got, want)
		}
	}
}

// TestHeadScanner feeds heads to the scanner in one read and split in two:
// a head read whole (ending in CRLF CRLF) has only its request line
// checked here, the header lines being checkFraming's; a bare LF before
// the end of the request line is caught either way.
func TestHeadScanner(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		bad        bool
	}{
		{"plain", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"empty lines first", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", true},
		{"bare LF empty line first", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"bare LF, no blank line", "GET / HTTP/1.1\r\nHost: a\nX: b", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var whole headScanner
			whole.reset()
			whole.scan([]byte(tc.head))
			if whole.bad != tc.bad {
				t.Errorf("one read: bad %v, want %v", whole.bad, tc.bad)
			}
			var split headScanner
			split.reset()
			split.scan([]byte(tc.head[:len(tc.head)/2]))
			split.scan([]byte(tc.head[len(tc.head)/2:]))
			if split.bad != tc.bad {
				t.Errorf("two reads: bad %v, want %v", split.bad, tc.bad)
			}
		})
	}
	var s headScanner
	s.reset()
	if s.scan([]byte("\r\n\r\n")); !s.on {
		t.Error("only empty lines: the scanner stopped before the head began")
	}
	if s.scan([]byte("GET / HTTP/1.1\r\n")); s.on != true || s.bad {
		t.Errorf("request line after empty lines: on %v, bad %v", s.on, s.bad)
	}
}
