package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// upstreamProxy is an upstream served by a real fasthttp server on loopback,
// configured like tollgate's (streamed request bodies).
type upstreamProxy struct {
	u      *upstream
	addr   string // host:port of the proxy
	url    string // "http://" + addr
	client *http.Client

	mu  sync.Mutex
	err error // what the last serve returned
}

func startUpstreamProxy(t testing.TB, target string, edit func(*Config)) *upstreamProxy {
	t.Helper()
	var cfg Config
	if edit != nil {
		edit(&cfg)
	}
	cfg.Defaults()
	trusted, err := parsePrefixes(cfg.TrustedProxies)
	if err != nil {
		t.Fatal(err)
	}
	u, err := newUpstream(target, cfg, trusted)
	if err != nil {
		t.Fatal(err)
	}
	p := &upstreamProxy{u: u}
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			err := u.serve(ctx, nil)
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
		},
		StreamRequestBody:            true,
		MaxRequestBodySize:           64 << 20,
		DisablePreParseMultipartForm: true,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	tr := &http.Transport{DisableCompression: true}
	p.addr = ln.Addr().String()
	p.url = "http://" + p.addr
	p.client = &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second, // a failure, not a hang
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := s.Shutdown(); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
		u.close()
	})
	return p
}

func (p *upstreamProxy) lastErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// do sends a request through the proxy and reads the whole response.
func (p *upstreamProxy) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func newTestUpstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// pattern is n bytes that are not all alike, so lost or reordered parts show.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

func TestUpstreamPassthrough(t *testing.T) {
	tests := []struct {
		name     string
		base     string // appended to the upstream's URL as the target's path
		method   string
		uri      string
		body     string
		upstream http.HandlerFunc
		check    func(t *testing.T, resp *http.Response, body []byte)
	}{
		{
			name: "GET status headers body", method: "GET", uri: "/hello?x=1&y=%20z&x=2",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Up", "yes")
				w.Header().Add("Set-Cookie", "a=1; Path=/")
				w.Header().Add("Set-Cookie", "b=2; HttpOnly")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				fmt.Fprintf(w, "%s %s", r.Method, r.RequestURI)
			},
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != http.StatusCreated {
					t.Errorf("status %d; want 201", resp.StatusCode)
				}
				if got := resp.Header.Get("X-Up"); got != "yes" {
					t.Errorf("X-Up %q; want yes", got)
				}
				if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || got[0] != "a=1; Path=/" || got[1] != "b=2; HttpOnly" {
					t.Errorf("Set-Cookie %q", got)
				}
				if got := resp.Header.Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type %q", got)
				}
				if string(body) != "GET /hello?x=1&y=%20z&x=2" {
					t.Errorf("body %q", body)
				}
			},
		},
		{
			name: "path sent as is", method: "GET", uri: "/a/../b//c%2Fd?q",
			upstream: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RequestURI) },
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if string(body) != "/a/../b//c%2Fd?q" {
					t.Errorf("upstream saw %q", body)
				}
			},
		},
		{
			name: "base path", base: "/base/", method: "GET", uri: "/x/y?z=1",
			upstream: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RequestURI) },
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if string(body) != "/base/x/y?z=1" {
					t.Errorf("upstream saw %q", body)
				}
			},
		},
		{
			name: "POST body", method: "POST", uri: "/form", body: "a=1&b=2",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "%s %d %s", r.Header.Get("Content-Type"), r.ContentLength, b)
			},
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if string(body) != "text/plain 7 a=1&b=2" {
					t.Errorf("upstream saw %q", body)
				}
			},
		},
		{
			name: "no Content-Type invented", method: "GET", uri: "/raw",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = nil // no sniffing either
				io.WriteString(w, "raw")
			},
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if v, ok := resp.Header["Content-Type"]; ok {
					t.Errorf("Content-Type %q; want none", v)
				}
				if string(body) != "raw" {
					t.Errorf("body %q", body)
				}
			},
		},
		{
			name: "HEAD", method: "HEAD", uri: "/file",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "11")
				w.Header().Set("ETag", `"v1"`)
				if r.Method != http.MethodHead {
					io.WriteString(w, "hello world")
				}
			},
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != http.StatusOK || resp.ContentLength != 11 || len(body) != 0 {
					t.Errorf("status %d, length %d, body %q; want 200, 11, none", resp.StatusCode, resp.ContentLength, body)
				}
				if got := resp.Header.Get("ETag"); got != `"v1"` {
					t.Errorf("ETag %q", got)
				}
			},
		},
		{
			name: "204", method: "DELETE", uri: "/thing",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Deleted", "1")
				w.WriteHeader(http.StatusNoContent)
			},
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != http.StatusNoContent || len(body) != 0 || resp.Header.Get("X-Deleted") != "1" {
					t.Errorf("status %d, body %q, headers %v", resp.StatusCode, body, resp.Header)
				}
			},
		},
		{
			name: "304", method: "GET", uri: "/cached",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("ETag", `"v2"`)
				w.Header().Set("Cache-Control", "max-age=60")
				w.WriteHeader(http.StatusNotModified)
			},
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
					t.Errorf("status %d, body %q; want 304 and none", resp.StatusCode, body)
				}
				if resp.Header.Get("ETag") != `"v2"` || resp.Header.Get("Cache-Control") != "max-age=60" {
					t.Errorf("headers %v", resp.Header)
				}
			},
		},
		{
			name: "redirect passed on", method: "GET", uri: "/old",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/new", http.StatusFound)
			},
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/new" {
					t.Errorf("status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestUpstream(t, tt.upstream)
			p := startUpstreamProxy(t, srv.URL+tt.base, nil)
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req := newRequest(t, tt.method, p.url+tt.uri, body)
			if tt.body != "" {
				req.Header.Set("Content-Type", "text/plain")
			}
			resp, got := p.do(t, req)
			tt.check(t, resp, got)
			if err := p.lastErr(); err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
}

func TestUpstreamHopByHopHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Connection", "X-Foo")
		w.Header().Set("X-Foo", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("Upgrade", "h2c")
		w.Header().Set("X-Kept", "1")
		io.WriteString(w, "ok")
	})
	p := startUpstreamProxy(t, srv.URL, nil)

	req := newRequest(t, "GET", p.url+"/", nil)
	req.Header.Set("Connection", "keep-alive, X-Client-Hop")
	req.Header.Set("X-Client-Hop", "1")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("TE", "deflate, trailers")
	req.Header.Set("Upgrade", "h2c") // without Connection: Upgrade
	req.Header.Set("X-End", "kept")
	resp, body := p.do(t, req)
	if string(body) != "ok" {
		t.Fatalf("body %q", body)
	}
	for _, name := range []string{"Connection", "X-Foo", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
		if v, ok := resp.Header[name]; ok {
			t.Errorf("client got %s: %q", name, v)
		}
	}
	if resp.Header.Get("X-Kept") != "1" {
		t.Errorf("X-Kept missing from %v", resp.Header)
	}

	up := <-seen
	for _, name := range []string{"Connection", "X-Client-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Upgrade"} {
		if v, ok := up[name]; ok {
			t.Errorf("upstream got %s: %q", name, v)
		}
	}
	if v := up["Te"]; len(v) != 1 || v[0] != "trailers" {
		t.Errorf("upstream got TE %q, want trailers alone (relayResponse passes trailers on)", v)
	}
	if up.Get("X-End") != "kept" {
		t.Errorf("X-End missing from %v", up)
	}
}

func TestUpstreamForwardedHeaders(t *testing.T) {
	tests := []struct {
		name    string
		trusted []string
		sent    http.Header
		want    map[string]string
		gone    []string // not at the upstream, nor any name with an underscore when untrusted
	}{
		{
			name: "untrusted peer: replaced",
			sent: http.Header{
				"X-Forwarded-For":   {"203.0.113.9"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host":  {"evil.example"},
				"Forwarded":         {"for=203.0.113.9"},
				"X-Real-Ip":         {"203.0.113.9", "203.0.113.10"},
				"True-Client-Ip":    {"203.0.113.9"},
				"X-Forwarded-Port":  {"443"},
				"X_forwarded_for":   {"203.0.113.9"},
				"Expect":            {"x-later"},
				"X-Kept":            {"1"},
			},
			want: map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"X-Forwarded-Proto": "http",
				"X-Forwarded-Host":  "tenant.example",
				"Forwarded":         `for=127.0.0.1;host="tenant.example";proto=http`,
				"X-Real-Ip":         "127.0.0.1",
				"X-Kept":            "1",
			},
			gone: []string{"True-Client-Ip", "X-Forwarded-Port", "Expect"},
		},
		{
			name:    "trusted peer: kept and appended",
			trusted: []string{"127.0.0.0/8"},
			sent: http.Header{
				"X-Forwarded-For":   {"203.0.113.9", "198.51.100.7"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host":  {"www.tenant.example"},
				"Forwarded":         {"for=203.0.113.9;proto=https"},
				"X-Real-Ip":         {"203.0.113.9"},
				"True-Client-Ip":    {"203.0.113.9"},
			},
			want: map[string]string{
				"X-Forwarded-For":   "203.0.113.9, 198.51.100.7, 127.0.0.1",
				"X-Forwarded-Proto": "https",
				"X-Forwarded-Host":  "www.tenant.example",
				"Forwarded":         `for=203.0.113.9;proto=https, for=127.0.0.1;host="tenant.example";proto=http`,
				"X-Real-Ip":         "203.0.113.9",
				"True-Client-Ip":    "203.0.113.9",
			},
		},
		{
			name:    "trusted peer that sent nothing",
			trusted: []string{"127.0.0.1"},
			want: map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"X-Forwarded-Proto": "http",
				"X-Forwarded-Host":  "tenant.example",
				"Forwarded":         `for=127.0.0.1;host="tenant.example";proto=http`,
				"X-Real-Ip":         "127.0.0.1",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type seenReq struct {
				host   string
				header http.Header
			}
			seen := make(chan seenReq, 1)
			srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				seen <- seenReq{r.Host, r.Header.Clone()}
			})
			p := startUpstreamProxy(t, srv.URL, func(c *Config) { c.TrustedProxies = tt.trusted })
			req := newRequest(t, "GET", p.url+"/", nil)
			req.Host = "tenant.example"
			for k, v := range tt.sent {
				req.Header[k] = v
			}
			p.do(t, req)
			got := <-seen
			if got.host != "tenant.example" {
				t.Errorf("upstream Host %q; want the client's tenant.example", got.host)
			}
			for k, want := range tt.want {
				if v := got.header.Values(k); len(v) != 1 || v[0] != want {
					t.Errorf("%s %q; want %q", k, v, want)
				}
			}
			for _, k := range tt.gone {
				if v, ok := got.header[k]; ok {
					t.Errorf("upstream got %s: %q", k, v)
				}
			}
			for k, v := range got.header {
				if len(tt.trusted) == 0 && strings.Contains(k, "_") {
					t.Errorf("upstream got %s: %q", k, v)
				}
			}
		})
	}
}

func TestUpstreamStreamsRequestBody(t *testing.T) {
	data := pattern(4 << 20)
	want := fmt.Sprintf("%x %d", sha256.Sum256(data), len(data))
	for _, tt := range []struct {
		name   string
		length int64 // -1: chunked
	}{
		{"Content-Length", int64(len(data))},
		{"chunked", -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			firstBytes := make(chan struct{})
			srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				h := sha256.New()
				n, err := io.Copy(h, io.LimitReader(r.Body, 1))
				if n == 1 {
					close(firstBytes) // while the client still holds back half
				}
				m, err := io.Copy(h, r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "%x %d", h.Sum(nil), n+m)
			})
			p := startUpstreamProxy(t, srv.URL, nil)

			pr, pw := io.Pipe()
			t.Cleanup(func() { pr.Close() })
			go func() {
				half := len(data) / 2
				if _, err := pw.Write(data[:half]); err != nil {
					return
				}
				select {
				case <-firstBytes:
				case <-time.After(10 * time.Second):
					pw.CloseWithError(errors.New("the upstream got nothing while the client waited"))
					return
				}
				if _, err := pw.Write(data[half:]); err != nil {
					return
				}
				pw.Close()
			}()
			req := newRequest(t, "POST", p.url+"/upload", pr)
			req.ContentLength = tt.length
			resp, body := p.do(t, req)
			if resp.StatusCode != http.StatusOK || string(body) != want {
				t.Fatalf("status %d, upstream computed %q; want %q", resp.StatusCode, body, want)
			}
		})
	}
}

func TestUpstreamStreamsResponseBody(t *testing.T) {
	data := pattern(8 << 20)
	sum := sha256.Sum256(data)
	for _, tt := range []struct {
		name          string
		contentLength bool
	}{
		{"Content-Length", true},
		{"chunked", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.contentLength {
					w.Header().Set("Content-Length", fmt.Sprint(len(data)))
				}
				for b := data; len(b) > 0; b = b[min(len(b), 64<<10):] {
					w.Write(b[:min(len(b), 64<<10)])
				}
			})
			p := startUpstreamProxy(t, srv.URL, nil)
			resp, body := p.do(t, newRequest(t, "GET", p.url+"/big", nil))
			if resp.StatusCode != http.StatusOK || sha256.Sum256(body) != sum || len(body) != len(data) {
				t.Fatalf("status %d, %d bytes; want 200 and the %d bytes sent", resp.StatusCode, len(body), len(data))
			}
			wantLength := int64(-1)
			if tt.contentLength {
				wantLength = int64(len(data))
			}
			if resp.ContentLength != wantLength {
				t.Errorf("Content-Length %d; want %d", resp.ContentLength, wantLength)
			}
		})
	}
}

func TestUpstreamStreamsChunksAsFlushed(t *testing.T) {
	next := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(next) }) }
	srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next: // the client has read the first event
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: second\n\n")
	})
	t.Cleanup(release)
	p := startUpstreamProxy(t, srv.URL, nil)

	resp, err := p.client.Do(newRequest(t, "GET", p.url+"/events", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: first\n\n" {
		t.Fatalf("first event %q, %v", first, err)
	}
	release()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "data: second\n\n" {
		t.Fatalf("second event %q, %v", rest, err)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type %q", got)
	}
}

// UpstreamTimeout bounds each wait for the upstream, not the whole response:
// a body that keeps coming may take longer.
func TestUpstreamSlowBodyWithinTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		for i := range 6 {
			fmt.Fprintf(w, "part %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(timeout / 4) // the pace under test, not synchronization
		}
	})
	p := startUpstreamProxy(t, srv.URL, func(c *Config) { c.UpstreamTimeout = timeout })
	start := time.Now()
	resp, body := p.do(t, newRequest(t, "GET", p.url+"/slow", nil))
	if resp.StatusCode != http.StatusOK || strings.Count(string(body), "part") != 6 {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	if d := time.Since(start); d <= timeout {
		t.Fatalf("took %v, no longer than the timeout %v: the test proves nothing", d, timeout)
	}
}

func TestUpstreamErrors(t *testing.T) {
	tests := []struct {
		name    string
		target  func(t *testing.T) string
		method  string
		body    string
		timeout time.Duration
		status  int
		err     error
	}{
		{
			name: "refused", method: "GET", target: closedPort,
			status: http.StatusBadGateway, err: errUpstreamUnavailable,
		},
		{
			name: "refused with a body", method: "POST", body: strings.Repeat("x", 100<<10), target: closedPort,
			status: http.StatusBadGateway, err: errUpstreamUnavailable,
		},
		{
			name: "closes without answering", method: "GET",
			target: func(t *testing.T) string {
				return rawUpstream(t, func(c net.Conn) {})
			},
			status: http.StatusBadGateway, err: errUpstreamUnavailable,
		},
		{
			name: "answers garbage", method: "GET",
			target: func(t *testing.T) string {
				return rawUpstream(t, func(c net.Conn) { io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n\r\n") })
			},
			status: http.StatusBadGateway, err: errUpstreamUnavailable,
		},
		{
			name: "slower than UpstreamTimeout", method: "GET", timeout: 200 * time.Millisecond,
			target: func(t *testing.T) string {
				release := make(chan struct{})
				srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					select {
					case <-release:
					case <-r.Context().Done():
					}
				})
				t.Cleanup(func() { close(release) }) // runs before srv.Close
				return srv.URL
			},
			status: http.StatusGatewayTimeout, err: errUpstreamTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.target(t)
			p := startUpstreamProxy(t, target, func(c *Config) { c.UpstreamTimeout = tt.timeout })
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			resp, page := p.do(t, newRequest(t, tt.method, p.url+"/", body))
			if resp.StatusCode != tt.status {
				t.Errorf("status %d; want %d", resp.StatusCode, tt.status)
			}
			if !bytes.Equal(page, defaultPages().status[tt.status].body) {
				t.Errorf("body is not tollgate's %d page: %q", tt.status, page)
			}
			host := strings.TrimPrefix(target, "http://")
			_, port, _ := net.SplitHostPort(host)
			if bytes.Contains(page, []byte(host)) || bytes.Contains(page, []byte(port)) {
				t.Errorf("page shows the upstream address %s", host)
			}
			if err := p.lastErr(); !errors.Is(err, tt.err) {
				t.Errorf("serve returned %v; want %v", err, tt.err)
			}
		})
	}
}

// closedPort is the URL of a loopback port nobody listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// rawUpstream serves each connection with answer after reading a request
// head, then closes it. It returns the URL.
func rawUpstream(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var accepted atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				answer(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// countingUpstream is an upstream served by h that counts the connections
// it accepted.
func countingUpstream(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	conns := new(atomic.Int32)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, conns
}

func TestUpstreamKeepAlive(t *testing.T) {
	srv, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(pattern(1000 + len(r.URL.Path)))
	})
	p := startUpstreamProxy(t, srv.URL, nil)
	for i := range 20 {
		req := newRequest(t, "GET", p.url+"/"+strings.Repeat("a", i), nil)
		if i%2 == 1 {
			req = newRequest(t, "POST", p.url+"/"+strings.Repeat("a", i), strings.NewReader("some body"))
		}
		if i%5 == 4 {
			req.Close = true // the client's Connection: close is not the upstream's
		}
		resp, body := p.do(t, req)
		if resp.StatusCode != http.StatusOK || len(body) != 1001+i {
			t.Fatalf("request %d: status %d, %d bytes", i, resp.StatusCode, len(body))
		}
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("20 requests used %d upstream connections; want at most 2", n)
	}
}

// A pooled connection the upstream has closed meanwhile costs a retry, not
// a 502, for a request that may be repeated.
func TestUpstreamRetriesClosedKeepAlive(t *testing.T) {
	target := rawUpstream(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") // then closes
	})
	p := startUpstreamProxy(t, target, nil)
	for i := range 3 {
		resp, body := p.do(t, newRequest(t, "GET", p.url+"/", nil))
		if resp.StatusCode != http.StatusOK || string(body) != "ok" {
			t.Fatalf("request %d: status %d, body %q", i, resp.StatusCode, body)
		}
	}
}

func TestUpstreamHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v host=%s", r.TLS != nil, r.Host)
	}))
	t.Cleanup(srv.Close)
	p := startUpstreamProxy(t, srv.URL, nil)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	p.u.tls.RootCAs = roots // before the first request

	req := newRequest(t, "GET", p.url+"/", nil)
	req.Host = "tenant.example"
	resp, body := p.do(t, req)
	if resp.StatusCode != http.StatusOK || string(body) != "tls=true host=tenant.example" {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
}

func TestUpstreamTargets(t *testing.T) {
	var cfg Config
	cfg.Defaults()
	for _, tt := range []struct {
		target, addr, base string
		tls                bool
	}{
		{"http://app.internal:8080", "app.internal:8080", "", false},
		{"http://10.0.0.7/", "10.0.0.7:80", "", false},
		{"https://app.internal/prefix/", "app.internal:443", "/prefix", true},
		{"http://[fd00::7]:3000/a%20b", "[fd00::7]:3000", "/a%20b", false},
	} {
		u, err := newUpstream(tt.target, cfg, nil)
		if err != nil {
			t.Errorf("%s: %v", tt.target, err)
			continue
		}
		if u.addr != tt.addr || u.base != tt.base || (u.tls != nil) != tt.tls || u.hc.IsTLS != tt.tls {
			t.Errorf("%s: addr %q base %q tls %v", tt.target, u.addr, u.base, u.tls != nil)
		}
		u.close()
	}
	for _, bad := range []string{"", "ftp://x", "http://", "http://u:p@x", "http://x/?q=1", "http://x/#f", "x:80"} {
		if _, err := newUpstream(bad, cfg, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestUpstreamBodyLimit(t *testing.T) {
	const limit = 1000
	tests := []struct {
		name   string
		size   int
		length bool // send Content-Length, else chunked
		status int
		called string // "yes", "no": the upstream saw the request; "": either
	}{
		{"Content-Length within", limit, true, http.StatusOK, "yes"},
		{"Content-Length over", limit + 1, true, http.StatusRequestEntityTooLarge, "no"},
		{"chunked within", limit, false, http.StatusOK, "yes"},
		{"chunked over", 64 << 10, false, http.StatusRequestEntityTooLarge, ""}, // a cut-off start, or nothing
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var called atomic.Bool
			srv := newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				called.Store(true)
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil {
					return // cut off
				}
				fmt.Fprint(w, n)
			})
			p := startUpstreamProxy(t, srv.URL, nil)
			p.u.maxBody = limit
			req := newRequest(t, "POST", p.url+"/", bytes.NewReader(pattern(tt.size)))
			if !tt.length {
				req.ContentLength = -1
				req.Body = io.NopCloser(req.Body) // hide the length from net/http
			}
			resp, body := p.do(t, req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d", resp.StatusCode, tt.status)
			}
			if tt.status == http.StatusOK && string(body) != fmt.Sprint(tt.size) {
				t.Errorf("upstream got %s bytes; want %d", body, tt.size)
			}
			if got := map[bool]string{true: "yes", false: "no"}[called.Load()]; tt.called != "" && got != tt.called {
				t.Errorf("upstream called: %s; want %s", got, tt.called)
			}
			if err := p.lastErr(); err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
}

// BenchmarkUpstreamGET proxies small GETs to a fasthttp upstream, beside
// net/http's httputil.ReverseProxy doing the same.
func BenchmarkUpstreamGET(b *testing.B) {
	body := pattern(1 << 10)
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }}
	go up.Serve(upLn)
	b.Cleanup(func() { up.Shutdown() })
	target := "http://" + upLn.Addr().String()

	run := func(b *testing.B, addr string) {
		c := &fasthttp.HostClient{Addr: addr, MaxConns: 1024}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://tenant.example/page?x=1")
			for pb.Next() {
				if err := c.Do(req, resp); err != nil || len(resp.Body()) != len(body) {
					b.Errorf("%v, %d bytes", err, len(resp.Body()))
					return
				}
			}
		})
	}
	b.Run("tollgate", func(b *testing.B) {
		run(b, startUpstreamProxy(b, target, nil).addr)
	})
	b.Run("httputil", func(b *testing.B) {
		u, _ := url.Parse(target)
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.Transport = &http.Transport{MaxIdleConnsPerHost: 1024}
		srv := httptest.NewServer(rp)
		b.Cleanup(srv.Close)
		run(b, strings.TrimPrefix(srv.URL, "http://"))
	})
}
