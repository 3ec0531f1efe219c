package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
)

func TestStaticServing(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	index := h.do("GET", "www.example", "/")
	etag := string(index.Header.Peek("ETag"))
	lastMod := string(index.Header.Peek("Last-Modified"))
	jsGz := h.do("GET", "www.example", "/app.js", "Accept-Encoding", "gzip")
	jsGzTag := string(jsGz.Header.Peek("ETag"))

	tests := []struct {
		name, method, host, uri string
		headers                 []string
		status                  int
		body                    string // substring expected in the body
		header                  map[string]string
	}{
		{name: "index", uri: "/", status: 200, body: "<h1>home</h1>", header: map[string]string{"Content-Type": "text/html; charset=utf-8", "Accept-Ranges": "bytes"}},
		{name: "host case and port", host: "WWW.Example:8080", uri: "/", status: 200, body: "home"},
		{name: "host trailing dot", host: "www.example.", uri: "/", status: 200, body: "home"},
		{name: "clean url", uri: "/about", status: 200, body: "about"},
		{name: "query ignored", uri: "/about?x=1", status: 200, body: "about"},
		{name: "directory index", uri: "/docs/", status: 200, body: "docs"},
		{name: "directory redirect", uri: "/docs?a=b", status: 301, header: map[string]string{"Location": "/docs/?a=b"}},
		{name: "custom 404", uri: "/nope", status: 404, body: "custom not found"},
		{name: "hidden file", uri: "/.env", status: 404, body: "custom not found"},
		{name: "symlink out of root", uri: "/leak.txt", status: 404},
		{name: "dot dot", uri: "/../secret.txt", status: 404},
		{name: "encoded dot dot", uri: "/%2e%2e/secret.txt", status: 404},
		{name: "encoded slash dot dot", uri: "/docs%2f..%2f..%2fsecret.txt", status: 404},
		{name: "double encoded", uri: "/%252e%252e/secret.txt", status: 404},
		{name: "backslash", uri: "/..\\secret.txt", status: 404},
		{name: "nul byte", uri: "/index.html%00.txt", status: 400},
		{name: "unknown host", host: "nobody.example", uri: "/", status: 404, body: "tollgate"},
		{name: "ip host", host: "127.0.0.1", uri: "/", status: 404},
		{name: "malformed host", host: "bad host!", uri: "/", status: 400, body: "400 Bad Request"},
		{name: "post not allowed", method: "POST", uri: "/", status: 405, header: map[string]string{"Allow": "GET, HEAD"}},
		{name: "if-none-match", uri: "/", headers: []string{"If-None-Match", etag}, status: 304, header: map[string]string{"ETag": etag}},
		{name: "if-none-match list", uri: "/", headers: []string{"If-None-Match", `"x", W/` + etag}, status: 304},
		{name: "if-none-match other", uri: "/", headers: []string{"If-None-Match", `"other"`}, status: 200, body: "home"},
		{name: "if-modified-since", uri: "/", headers: []string{"If-Modified-Since", lastMod}, status: 304},
		{name: "if-modified-since old", uri: "/", headers: []string{"If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"}, status: 200},
		{name: "range", uri: "/4k.bin", headers: []string{"Range", "bytes=10-19"}, status: 206, header: map[string]string{"Content-Range": "bytes 10-19/4096", "Content-Length": "10"}},
		{name: "range suffix", uri: "/4k.bin", headers: []string{"Range", "bytes=-100"}, status: 206, header: map[string]string{"Content-Range": "bytes 3996-4095/4096"}},
		{name: "range unsatisfiable", uri: "/4k.bin", headers: []string{"Range", "bytes=5000-6000"}, status: 416, header: map[string]string{"Content-Range": "bytes */4096"}},
		{name: "range multipart ignored", uri: "/4k.bin", headers: []string{"Range", "bytes=0-1,5-6"}, status: 200, header: map[string]string{"Content-Length": "4096"}},
		{name: "range other unit", uri: "/4k.bin", headers: []string{"Range", "items=0-1"}, status: 200},
		{name: "range stale if-range", uri: "/4k.bin", headers: []string{"Range", "bytes=0-1", "If-Range", `"old"`}, status: 200},
		{name: "gzip", uri: "/app.js", headers: []string{"Accept-Encoding", "gzip"}, status: 200, header: map[string]string{"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}},
		{name: "brotli preferred", uri: "/app.js", headers: []string{"Accept-Encoding", "gzip, br"}, status: 200, header: map[string]string{"Content-Encoding": "br"}},
		{name: "identity", uri: "/app.js", status: 200, body: "hello, tollgate", header: map[string]string{"Content-Encoding": ""}},
		{name: "gzip 304", uri: "/app.js", headers: []string{"Accept-Encoding", "gzip", "If-None-Match", jsGzTag}, status: 304},
		{name: "large streamed", uri: "/large.bin", status: 200, header: map[string]string{"Content-Length": "131072"}},
		{name: "large range", uri: "/large.bin", headers: []string{"Range", "bytes=16-31"}, status: 206, body: "0123456789abcdef"},
		{name: "head", method: "HEAD", uri: "/4k.bin", status: 200, header: map[string]string{"Content-Length": "4096"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, host := tt.method, tt.host
			if method == "" {
				method = "GET"
			}
			if host == "" {
				host = "www.example"
			}
			resp := h.do(method, host, tt.uri, tt.headers...)
			if resp.StatusCode() != tt.status {
				t.Fatalf("status %d; want %d (body %.80q)", resp.StatusCode(), tt.status, resp.Body())
			}
			if !strings.Contains(string(resp.Body()), tt.body) {
				t.Fatalf("body %.200q does not contain %q", resp.Body(), tt.body)
			}
			if bytes.Contains(resp.Body(), []byte(secret)) {
				t.Fatal("served a file from outside the site root")
			}
			for k, v := range tt.header {
				if got := string(resp.Header.Peek(k)); got != v {
					t.Fatalf("header %s = %q; want %q", k, got, v)
				}
			}
			if method == "HEAD" && len(resp.Body()) != 0 {
				t.Fatal("HEAD response has a body")
			}
		})
	}

	// The compressed bodies decode to the file.
	gz := h.do("GET", "www.example", "/app.js", "Accept-Encoding", "gzip")
	plain, err := gz.BodyGunzip()
	if err != nil || string(plain) != siteFiles["app.js"] {
		t.Fatalf("gunzip: %v (%d bytes)", err, len(plain))
	}
	br := h.do("GET", "www.example", "/app.js", "Accept-Encoding", "br")
	plain, err = br.BodyUnbrotli()
	if err != nil || string(plain) != siteFiles["app.js"] {
		t.Fatalf("unbrotli: %v (%d bytes)", err, len(plain))
	}
	large := h.do("GET", "www.example", "/large.bin")
	if string(large.Body()) != siteFiles["large.bin"] {
		t.Fatal("large streamed body differs")
	}
}

func TestSuspendedOrgAndSiteChanges(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	ctx := context.Background()
	state := sites.StateSuspended
	_, err := h.reg.UpdateOrg(ctx, "acme", sites.OrgPatch{State: &state})
	must(t, err)
	if resp := h.do("GET", "www.example", "/"); resp.StatusCode() != 403 {
		t.Fatalf("suspended org: status %d; want 403", resp.StatusCode())
	}
	state = sites.StateActive
	_, err = h.reg.UpdateOrg(ctx, "acme", sites.OrgPatch{State: &state})
	must(t, err)
	if resp := h.do("GET", "www.example", "/"); resp.StatusCode() != 200 {
		t.Fatalf("reactivated org: status %d; want 200", resp.StatusCode())
	}
	must(t, h.reg.DetachDomain(ctx, "www.example"))
	if resp := h.do("GET", "www.example", "/"); resp.StatusCode() != 404 {
		t.Fatalf("detached domain: status %d; want 404", resp.StatusCode())
	}
	// A dir site whose directory does not exist answers 503, not a crash.
	_, err = h.reg.CreateSite(ctx, sites.Site{ID: "gone", Org: "acme", Source: sites.Source{Type: sites.SourceDir, Path: "/nonexistent/tollgate"}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "gone", "gone.example")
	must(t, err)
	if resp := h.do("GET", "gone.example", "/"); resp.StatusCode() != 503 {
		t.Fatalf("missing directory: status %d; want 503", resp.StatusCode())
	}
}

// TestRawRequestLimits sends requests fasthttp's client would refuse to build.
func TestRawRequestLimits(t *testing.T) {
	h := newHarness(t, Config{}, Limits{MaxHeaderBytes: 4096})
	ln := h.proxy
	_ = ln
	tests := []struct {
		name, raw string
		status    int
	}{
		{"oversized headers", "GET / HTTP/1.1\r\nHost: www.example\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n", 431},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"garbage", "NOT HTTP AT ALL\r\n\r\n", 400},
		{"absolute uri other host", "GET http://nobody.example/ HTTP/1.1\r\nHost: www.example\r\n\r\n", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := h.dialRaw(t)
			defer conn.Close()
			if _, err := conn.Write([]byte(tt.raw)); err != nil {
				t.Fatal(err)
			}
			var resp fasthttp.Response
			if err := resp.Read(bufio.NewReader(conn)); err != nil {
				t.Fatalf("reading response: %v", err)
			}
			if resp.StatusCode() != tt.status {
				t.Fatalf("status %d; want %d", resp.StatusCode(), tt.status)
			}
		})
	}
}

func (h *harness) dialRaw(t testing.TB) net.Conn {
	t.Helper()
	conn, err := h.client.Dial("")
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestRequestFields: the conditional and range fields are looked up only
// when a line of the received head names them, in any case; a request
// without a received head looks all of them up.
func TestRequestFields(t *testing.T) {
	for _, tc := range []struct {
		head string
		want uint8
	}{
		{"Host: a\r\nAccept: */*\r\n\r\n", 0},
		{"Host: a\r\nReferer: http://a/\r\nIf-Modified: x\r\n\r\n", 0},
		{"Host: a\r\nif-none-match: \"x\"\r\n\r\n", fieldIfNoneMatch},
		{"RANGE: bytes=0-1\r\nHost: a\r\nIf-Range: \"x\"\r\n\r\n", fieldRange | fieldIfRange},
		{"If-Match: *\r\nHost: a\r\nIf-Unmodified-Since: x\r\nIf-Modified-Since: x\r\n\r\n", fieldIfMatch | fieldIfUnmodSince | fieldIfModSince},
	} {
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\n" + tc.head))); err != nil {
			t.Fatal(err)
		}
		if got := requestFields(&req.Header); got != tc.want {
			t.Errorf("%q: %06b, want %06b", tc.head, got, tc.want)
		}
	}
	var built fasthttp.Request
	built.Header.Set("If-None-Match", `"x"`)
	if got := requestFields(&built.Header); got != fieldsAll {
		t.Errorf("built in memory: %06b, want all", got)
	}
}
