package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFloor serves the benchmark site and a proxied host from the floor on
// loopback and checks every answer the rows rely on: a file with its ETag,
// 304 with that ETag, 404 for a missing file, and the upstream's answer.
func TestFloor(t *testing.T) {
	dir := t.TempDir()
	if err := writeSite(dir); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream "+r.URL.Path)
	}))
	defer up.Close()
	s, err := newFloor(strings.TrimPrefix(up.URL, "http://"), dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Shutdown()
	base := "http://" + ln.Addr().String()
	get := func(host, path, inm string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Host = host
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	want, _ := os.ReadFile(filepath.Join(dir, "4k.txt"))
	status, body, h := get(hostStatic, "/4k.txt", "")
	etag := h.Get("ETag")
	if status != 200 || body != string(want) || etag == "" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /4k.txt: %d, %d bytes, ETag %q, Content-Type %q", status, len(body), etag, h.Get("Content-Type"))
	}
	if status, body, _ := get(hostStatic, "/4k.txt", etag); status != 304 || body != "" {
		t.Errorf("revalidation: %d with %d bytes, want 304 and none", status, len(body))
	}
	if status, _, _ := get(hostStatic, "/4k.txt", `"other"`); status != 200 {
		t.Errorf("another ETag: %d, want 200", status)
	}
	if status, _, h := get(hostStatic, "/index.html", ""); status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Errorf("GET /index.html: %d, Content-Type %q", status, h.Get("Content-Type"))
	}
	if status, _, _ := get(hostStatic, "/missing", ""); status != 404 {
		t.Errorf("GET /missing: %d, want 404", status)
	}
	if status, body, _ := get(hostProxied, "/x", ""); status != 200 || body != "upstream /x" {
		t.Errorf("proxied: %d %q", status, body)
	}
}

func TestFloorNote(t *testing.T) {
	r := func(v float64) *float64 { return &v }
	rows := []serverResult{
		{Server: srvTollgate, CPUPerRequest: 6000, ServerBusy: 0.99},
		{Server: srvNginx, CPUPerRequest: 4500, ServerBusy: 0.98, BaseRatio: r(0.75)},
		{Server: srvFloor, CPUPerRequest: 5000, ServerBusy: 0.99, BaseRatio: r(0.9)},
	}
	note := floorNote(rows)
	for _, want := range []string{"server CPU per request: tollgate 6.0µs", "nginx 4.5µs", "(tollgate ÷ it per CPU second 0.75×)",
		"fasthttp-floor ÷ nginx: 0.83× req/s, 0.90× per CPU second"} {
		if !strings.Contains(note, want) {
			t.Errorf("note %q lacks %q", note, want)
		}
	}
	if note := floorNote(rows[:2]); strings.Contains(note, "floor ÷") {
		t.Errorf("no floor row, yet %q", note)
	}
}
