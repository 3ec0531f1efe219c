package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// What tollgate promises a stranger on its public HTTP/1.1 listener, as raw
// bytes in and responses out (RFC 9112 framing, RFC 9110 semantics), against
// the built binary. Each case says which responses a strict client reads,
// whether the connection must be closed afterwards, and what the tenant's
// upstream must (not) have received.

// rawEdge is the fixture: two tenants' directory sites, a suspended org's
// site and an upstream site whose requests are recorded.
type rawEdge struct {
	in *instance
	up *recorder
}

// recorder is a tenant upstream that remembers every request it received.
type recorder struct {
	mu   sync.Mutex
	seen []*http.Request
	body map[*http.Request]string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.seen = append(rec.seen, r)
	rec.body[r] = string(b)
	rec.mu.Unlock()
	fmt.Fprintf(w, "upstream %s %s host=%s", r.Method, r.URL.RequestURI(), r.Host)
}

// find returns the requests whose path is path.
func (rec *recorder) find(path string) []*http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []*http.Request
	for _, r := range rec.seen {
		if r.URL.Path == path {
			out = append(out, r)
		}
	}
	return out
}

const otherSecret = "OTHER-TENANT-SECRET"

func startRawEdge(t *testing.T, tail string) *rawEdge {
	t.Helper()
	dir := t.TempDir()
	rec := &recorder{body: map[*http.Request]string{}}
	up := httptest.NewServer(rec)
	t.Cleanup(up.Close)
	in := startTollgateConf(t, dir, "", tail)
	www := filepath.Join(dir, "www")
	other := filepath.Join(dir, "other")
	for d, files := range map[string]map[string]string{
		www:   {"index.html": "<h1>home</h1>", "docs/index.html": "<h1>docs</h1>"},
		other: {"index.html": "<h1>other</h1>", "secret.txt": otherSecret},
	} {
		for name, body := range files {
			p := filepath.Join(d, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	steps := [][]string{
		{"plan", "put", "big"},
		{"org", "create", "acme", "--plan", "big"},
		{"org", "create", "other", "--plan", "big"},
		{"org", "create", "gone", "--plan", "big", "--state", "suspended"},
		{"site", "create", "acme", "www", "--dir", www},
		{"site", "create", "acme", "app", "--upstream", up.URL},
		{"site", "create", "other", "secret", "--dir", other},
		{"site", "create", "gone", "gone", "--dir", www},
		{"domain", "add", "www", "www.example"},
		{"domain", "add", "app", "app.example"},
		{"domain", "add", "secret", "other.example"},
		{"domain", "add", "gone", "gone.example"},
	}
	for _, s := range steps {
		if out, code := in.cli(t, s...); code != 0 {
			t.Fatalf("%v: %s", s, out)
		}
	}
	return &rawEdge{in: in, up: rec}
}

// rawResult is what a strict client saw on one connection.
type rawResult struct {
	responses []*http.Response
	bodies    []string
	closed    bool // the server closed the connection after the responses
	err       error
}

// exchange writes send on a new connection to addr and reads the responses
// that follow (at most max), then whether the connection is closed.
func exchange(t *testing.T, addr, send string, max int, methods ...string) rawResult {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, send); err != nil {
		t.Fatal(err)
	}
	return readResponses(c, max, methods...)
}

// exchange is exchange on the fixture's public listener; a refused or
// failed connection reports whether the tollgate process is still running,
// its exit status and its log.
func (e *rawEdge) exchange(t *testing.T, send string, max int, methods ...string) rawResult {
	t.Helper()
	c, err := net.Dial("tcp", e.in.http)
	if err != nil {
		t.Fatalf("dial %s: %v\n%s", e.in.http, err, e.in.state())
	}
	defer c.Close()
	if _, err := io.WriteString(c, send); err != nil {
		t.Fatalf("write: %v\n%s", err, e.in.state())
	}
	return readResponses(c, max, methods...)
}

func readResponses(c net.Conn, max int, methods ...string) rawResult {
	var res rawResult
	br := bufio.NewReader(c)
	for i := 0; i < max; i++ {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		method := "GET"
		if i < len(methods) {
			method = methods[i]
		}
		if _, err := br.Peek(1); err != nil {
			// No further response: the connection is closed, or open and
			// silent (a timeout).
			var ne net.Error
			res.closed = !(errors.As(err, &ne) && ne.Timeout())
			return res
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			res.err = err
			res.closed = true
			return res
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res.responses = append(res.responses, resp)
		res.bodies = append(res.bodies, string(b))
		if err != nil {
			res.err = err
			return res
		}
		if resp.Close {
			break
		}
	}
	// Closed, or silent? A closed connection reads EOF at once.
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var one [1]byte
	n, err := br.Read(one[:])
	switch {
	case n > 0:
		res.err = fmt.Errorf("unexpected bytes after the responses: %q", one[:n])
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), isReset(err):
		res.closed = true
	}
	return res
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func (r rawResult) statuses() []int {
	var out []int
	for _, resp := range r.responses {
		out = append(out, resp.StatusCode)
	}
	return out
}

// smuggled is a request for the other tenant's secret, hidden in a body.
const smuggled = "GET /secret.txt HTTP/1.1\r\nHost: other.example\r\n\r\n"

func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

func TestRawFraming(t *testing.T) {
	e := startRawEdge(t, "")
	pad := strings.Repeat("A", 8<<10)
	bodyWith := func(inner string) string { return pad + inner }
	post := func(host, path, body string, extra ...string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n%s", path, host, len(body), strings.Join(extra, ""), body)
	}
	postChunked := func(host, path, body string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n", path, host, chunk(body))
	}
	follow := "GET / HTTP/1.1\r\nHost: www.example\r\n\r\n"

	tests := []struct {
		name   string
		send   string
		max    int
		want   []int // statuses read, in order
		closed bool  // the connection must be closed after them
		open   bool  // the connection must stay open after them
	}{
		// 1. A body nobody reads is never parsed as the next request.
		{"405 on a dir site, body smuggles a request", post("www.example", "/", bodyWith(smuggled)), 3, []int{405}, false, false},
		{"404 unknown host, body smuggles", post("nobody.example", "/", bodyWith(smuggled)), 3, []int{404}, false, false},
		{"400 bad host, body smuggles", post("bad_host!", "/", bodyWith(smuggled)), 3, []int{400}, false, false},
		{"403 suspended org, body smuggles", post("gone.example", "/", bodyWith(smuggled)), 3, []int{403}, false, false},
		{"chunked body to a dir site smuggles", postChunked("www.example", "/", bodyWith(smuggled)), 3, []int{405}, false, false},
		{"small unread body is drained, keep-alive works", post("www.example", "/", "x=1") + follow, 3, []int{405, 200}, false, true},
		{"small unread chunked body is drained", postChunked("www.example", "/", "x=1") + follow, 3, []int{405, 200}, false, true},
		{"huge Content-Length not read: close", "POST / HTTP/1.1\r\nHost: www.example\r\nContent-Length: 1000000000\r\n\r\n" + pad + pad + smuggled, 3, []int{405}, true, false},
		{"expect 100-continue to a dir site: final status first", "POST / HTTP/1.1\r\nHost: www.example\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n", 2, []int{405}, true, false},
		{"expect 100-continue to an unknown host", "PUT / HTTP/1.1\r\nHost: nobody.example\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n", 2, []int{404}, true, false},
		// 2. Ambiguous framing.
		{"TE and CL together", "POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 3, []int{400}, true, false},
		{"CL and TE together", "POST / HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled, 3, []int{400}, true, false},
		{"TE with obs-fold and CL", "POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled, 3, []int{400}, true, false},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 2, []int{501}, true, false},
		{"TE identity", "POST / HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nhi", 2, []int{400}, true, false},
		{"two CL values", "POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!", 2, []int{400}, true, false},
		{"header name with a space", "GET / HTTP/1.1\r\nHost: www.example\r\nX Foo: bar\r\n\r\n", 2, []int{400}, true, false},
		{"space before the colon", "GET / HTTP/1.1\r\nHost: www.example\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 2, []int{400}, true, false},
		{"bare LF request", "GET / HTTP/1.1\nHost: www.example\n\n", 2, []int{400}, true, false},
		{"bare LF inside the headers", "GET / HTTP/1.1\r\nHost: www.example\nX-A: b\r\n\r\n", 2, []int{400}, true, false},
		{"Content-Length with a sign", "POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: +5\r\n\r\nhello", 2, []int{400}, true, false},
		{"Content-Length list", "POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5, 5\r\n\r\nhello", 2, []int{400}, true, false},
		{"Content-Length in hex", "POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 0x5\r\n\r\nhello", 2, []int{400}, true, false},
		{"TE chunked twice", "POST / HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 2, []int{501}, true, false},
		{"TE xchunked", "POST / HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 2, []int{501}, true, false},
		{"TE after a vertical tab", "POST / HTTP/1.1\r\nHost: app.example\r\n\x0bTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 2, []int{400}, true, false},
		{"TE on HTTP/1.0 (faulty framing: answered, closed)", "POST / HTTP/1.0\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 2, []int{501}, true, false},
		{"NUL in a header value", "GET / HTTP/1.1\r\nHost: www.example\r\nX-A: a\x00b\r\n\r\n", 2, []int{400}, true, false},
		{"chunk size overflow", "POST / HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nx\r\n0\r\n\r\n" + smuggled, 3, []int{400}, true, false},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: www.example\r\nHost: other.example\r\n\r\n", 2, []int{400}, true, false},
		{"no Host on HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 2, []int{400}, true, false},
		// 3. Connection: close in any form.
		{"Connection: CLOSE", "GET / HTTP/1.1\r\nHost: www.example\r\nConnection: CLOSE\r\n\r\n" + follow, 3, []int{200}, true, false},
		{"Connection: keep-alive, close", "GET / HTTP/1.1\r\nHost: www.example\r\nConnection: keep-alive, close\r\n\r\n" + follow, 3, []int{200}, true, false},
		{"Connection: X-Foo, close", "GET / HTTP/1.1\r\nHost: www.example\r\nConnection: X-Foo, close\r\n\r\n" + follow, 3, []int{200}, true, false},
		{"second Connection line says close", "GET / HTTP/1.1\r\nHost: www.example\r\nConnection: X-Foo\r\nConnection: close\r\n\r\n" + follow, 3, []int{200}, true, false},
		{"HTTP/1.0 without keep-alive", "GET / HTTP/1.0\r\nHost: www.example\r\n\r\n" + follow, 3, []int{200}, true, false},
		{"keep-alive by default", follow + follow, 2, []int{200, 200}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := e.exchange(t, tt.send, tt.max)
			if res.err != nil {
				t.Errorf("read: %v", res.err)
			}
			if fmt.Sprint(res.statuses()) != fmt.Sprint(tt.want) {
				t.Errorf("statuses %v, want %v; bodies %q", res.statuses(), tt.want, res.bodies)
			}
			for _, b := range res.bodies {
				if strings.Contains(b, otherSecret) {
					t.Errorf("the other tenant's secret was served: %q", b)
				}
			}
			if tt.closed && !res.closed {
				t.Errorf("connection left open")
			}
			if tt.open && res.closed {
				t.Errorf("connection closed; want keep-alive")
			}
		})
	}
	if got := e.up.find("/secret.txt"); len(got) != 0 {
		t.Errorf("a smuggled request reached the upstream: %v", got[0].URL)
	}
}

// TestRawHopByHop: every Connection line counts when the proxy collects
// hop-by-hop names, and no Connection token removes Host.
func TestRawProxySemantics(t *testing.T) {
	e := startRawEdge(t, "")
	tests := []struct {
		name, send, path string
		check            func(t *testing.T, r *http.Request, body string)
		status           int
	}{
		{"second Connection line does not hide the first", "GET /hop HTTP/1.1\r\nHost: app.example\r\nConnection: X-Foo\r\nConnection: keep-alive\r\nX-Foo: secret\r\n\r\n", "/hop",
			func(t *testing.T, r *http.Request, _ string) {
				if v := r.Header.Get("X-Foo"); v != "" {
					t.Errorf("X-Foo named in Connection reached the upstream: %q", v)
				}
			}, 200},
		{"Connection: close on a second line does not hide X-Foo", "GET /hop2 HTTP/1.1\r\nHost: app.example\r\nConnection: X-Foo\r\nConnection: close\r\nX-Foo: secret\r\n\r\n", "/hop2",
			func(t *testing.T, r *http.Request, _ string) {
				if v := r.Header.Get("X-Foo"); v != "" {
					t.Errorf("X-Foo named in Connection reached the upstream: %q", v)
				}
			}, 200},
		{"upgrade request: origin form and the tenant's Host", "GET /ws?x=1 HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "/ws",
			func(t *testing.T, r *http.Request, _ string) {
				if r.Host != "app.example" || r.RequestURI != "/ws?x=1" {
					t.Errorf("upstream saw Host %q target %q", r.Host, r.RequestURI)
				}
				if r.Header.Get("Upgrade") != "websocket" {
					t.Errorf("Upgrade %q", r.Header.Get("Upgrade"))
				}
			}, 200},
		{"absolute-form upgrade request", "GET http://app.example/ws2 HTTP/1.1\r\nHost: evil.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "/ws2",
			func(t *testing.T, r *http.Request, _ string) {
				if r.Host != "app.example" || r.RequestURI != "/ws2" {
					t.Errorf("upstream saw Host %q target %q", r.Host, r.RequestURI)
				}
			}, 200},
		{"Connection: Host keeps Host", "GET /host HTTP/1.1\r\nHost: app.example\r\nConnection: Host, X-Forwarded-For\r\n\r\n", "/host",
			func(t *testing.T, r *http.Request, _ string) {
				if r.Host != "app.example" {
					t.Errorf("upstream saw Host %q", r.Host)
				}
				if r.Header.Get("X-Forwarded-For") != "127.0.0.1" {
					t.Errorf("X-Forwarded-For %q", r.Header.Get("X-Forwarded-For"))
				}
			}, 200},
		{"absolute-form target: Host is the target's authority", "GET http://app.example/abs?q=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n", "/abs",
			func(t *testing.T, r *http.Request, _ string) {
				if r.Host != "app.example" || r.RequestURI != "/abs?q=1" {
					t.Errorf("upstream saw Host %q URI %q", r.Host, r.RequestURI)
				}
				if v := r.Header.Get("X-Forwarded-Host"); v != "app.example" {
					t.Errorf("X-Forwarded-Host %q", v)
				}
				if v := r.Header.Get("Forwarded"); strings.Contains(v, "evil") {
					t.Errorf("Forwarded %q", v)
				}
			}, 200},
		{"untrusted client headers are removed", "GET /untrusted HTTP/1.1\r\nHost: app.example\r\nX-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nClient-IP: 6.6.6.6\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Prefix: /evil\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Server: evil\r\n\r\n", "/untrusted",
			func(t *testing.T, r *http.Request, _ string) {
				for k, vs := range r.Header {
					for _, v := range vs {
						if strings.Contains(v, "6.6.6.6") || strings.Contains(v, "evil") {
							t.Errorf("upstream saw %s: %s", k, v)
						}
					}
				}
				if v := r.Header.Get("X-Forwarded-Proto"); v != "http" {
					t.Errorf("X-Forwarded-Proto %q", v)
				}
				if v := r.Header.Get("X-Real-IP"); v != "" && v != "127.0.0.1" {
					t.Errorf("X-Real-IP %q", v)
				}
			}, 200},
		{"upstream reads a chunked body, the next request is its own", "POST /chunked HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk("hello") + "0\r\n\r\n", "/chunked",
			func(t *testing.T, r *http.Request, body string) {
				if body != "hello" {
					t.Errorf("upstream body %q", body)
				}
			}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := exchange(t, e.in.http, tt.send, 1)
			if res.err != nil || fmt.Sprint(res.statuses()) != fmt.Sprint([]int{tt.status}) {
				t.Fatalf("statuses %v (%v), want [%d]; %q", res.statuses(), res.err, tt.status, res.bodies)
			}
			got := e.up.find(tt.path)
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests for %s", len(got), tt.path)
			}
			e.up.mu.Lock()
			body := e.up.body[got[0]]
			e.up.mu.Unlock()
			tt.check(t, got[0], body)
		})
	}
}

// TestRawExpectContinue: a request whose body is read (an upstream site)
// gets 100 Continue, sends its body, and the upstream receives it whole.
func TestRawExpectContinue(t *testing.T) {
	e := startRawEdge(t, "")
	c, err := net.Dial("tcp", e.in.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "POST /expect HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("first line %q, %v; want 100 Continue", line, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("after 100: %q", blank)
	}
	fmt.Fprint(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("final response: %v %v", resp, err)
	}
	resp.Body.Close()
	got := e.up.find("/expect")
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests", len(got))
	}
	e.up.mu.Lock()
	defer e.up.mu.Unlock()
	if e.up.body[got[0]] != "hello" {
		t.Fatalf("upstream body %q", e.up.body[got[0]])
	}
}

// state says whether the instance's process still runs (else its exit
// status), what its public listener's socket looks like, and its log.
func (in *instance) state() string {
	status := "running"
	select {
	case err := <-in.exited:
		in.exited <- err
		status = fmt.Sprintf("exited: %v", err)
	default:
	}
	_, port, _ := net.SplitHostPort(in.http)
	ss, _ := exec.Command("ss", "-ltnp", "sport = :"+port).CombinedOutput()
	return fmt.Sprintf("tollgate pid %d %s; sockets on %s:\n%s\nlog:\n%s", in.cmd.Process.Pid, status, in.http, ss, in.stderr)
}
