package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
	"golang.org/x/net/http2"
)

// tlsHarness is a harness whose proxy also serves TLS (h1 and h2) on a
// loopback TCP port, metering into its own meter.
type tlsHarness struct {
	*harness
	sink *store.BoltUsage
	m    *meter.Meter
	addr string
	pool *x509.CertPool
}

func newTLSHarness(t testing.TB, upstreamURL string) *tlsHarness {
	st := storetest.Open(t)
	sink := store.NewBoltUsage(st)
	m, err := meter.New(meter.Config{}, meter.Options{Sink: sink, Node: "t", Metrics: prometheus.NewRegistry()})
	must(t, err)
	h := newHarnessUsage(t, Config{}, Limits{}, m)
	ctx := context.Background()
	_, err = h.reg.CreateOrg(ctx, sites.Org{ID: "beta", Plan: "big"})
	must(t, err)
	_, err = h.reg.CreateSite(ctx, sites.Site{ID: "app", Org: "beta", Source: sites.Source{Type: sites.SourceUpstream, URL: upstreamURL}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "app", "app.example")
	must(t, err)

	// Same modification times in every harness, so ETags compare.
	fixed := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for name := range siteFiles {
		must(t, os.Chtimes(filepath.Join(h.root, name), fixed, fixed))
	}
	c, err := certtest.New(time.Hour, "www.example", "app.example", "nobody.example")
	must(t, err)
	cert, pool := c.TLS, c.Pool()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	return &tlsHarness{harness: h, sink: sink, m: m, addr: ln.Addr().String(), pool: pool}
}

// client returns an HTTP client speaking only h1 or only h2 to the harness,
// whatever the URL's host.
func (h *tlsHarness) client(proto string) *http.Client {
	cfg := &tls.Config{RootCAs: h.pool}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, h.addr)
	}
	if proto == "h2" {
		return &http.Client{Transport: &http2.Transport{TLSClientConfig: cfg, DisableCompression: true,
			DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
				c, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				host, _, _ := net.SplitHostPort(addr)
				cfg = cfg.Clone()
				cfg.ServerName = host
				tc := tls.Client(c, cfg)
				if err := tc.HandshakeContext(ctx); err != nil {
					return nil, err
				}
				return tc, nil
			}}, CheckRedirect: noRedirects}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DialContext: dial, DisableCompression: true,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, CheckRedirect: noRedirects}
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// TestH1AndH2ServeAndMeterAlike drives the same requests over HTTP/1.1 and
// HTTP/2 (TLS, ALPN) and requires the same answers and the same metered
// usage, per org, from both.
func TestH1AndH2ServeAndMeterAlike(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		msg := fmt.Sprintf("%s %s body=%d proto-fwd=%s\n", r.Method, r.URL.Path, len(body), r.Header.Get("X-Forwarded-Proto"))
		w.Header().Set("Content-Length", fmt.Sprint(len(msg)))
		w.Header().Set("X-Upstream", "yes")
		io.WriteString(w, msg)
	}))
	t.Cleanup(upstream.Close)

	type request struct {
		method, host, uri string
		hdr               []string
		body              string
	}
	requests := []request{
		{"GET", "www.example", "/", nil, ""},
		{"GET", "www.example", "/4k.bin", nil, ""},
		{"GET", "www.example", "/4k.bin", []string{"Range", "bytes=100-199"}, ""},
		{"GET", "www.example", "/app.js", []string{"Accept-Encoding", "gzip"}, ""},
		{"GET", "www.example", "/app.js", []string{"Accept-Encoding", "br"}, ""},
		{"GET", "www.example", "/large.bin", nil, ""},
		{"HEAD", "www.example", "/large.bin", nil, ""},
		{"HEAD", "www.example", "/", nil, ""},
		{"GET", "www.example", "/missing", nil, ""},
		{"POST", "www.example", "/", nil, "ignored"},
		{"GET", "www.example", "/docs", nil, ""},
		{"GET", "www.example", "/about?x=1", nil, ""},
		{"GET", "nobody.example", "/", nil, ""},
		{"GET", "app.example", "/hello", nil, ""},
		{"POST", "app.example", "/upload", nil, strings.Repeat("x", 10000)},
	}
	compared := []string{"Content-Type", "Content-Length", "Content-Encoding", "Content-Range", "Etag",
		"Last-Modified", "Location", "Vary", "Accept-Ranges", "Server", "X-Upstream"}

	type answer struct {
		status int
		header map[string]string
		body   string
		proto  string
	}
	run := func(proto string) ([]answer, map[string]meter.Values, *tlsHarness) {
		h := newTLSHarness(t, upstream.URL)
		c := h.client(proto)
		var out []answer
		etag := ""
		for _, r := range append(requests, request{"GET", "www.example", "/", []string{"If-None-Match", "ETAG"}, ""}) {
			var body io.Reader
			if r.body != "" {
				body = strings.NewReader(r.body)
			}
			req, err := http.NewRequest(r.method, "https://"+r.host+r.uri, body)
			must(t, err)
			for i := 0; i+1 < len(r.hdr); i += 2 {
				v := r.hdr[i+1]
				if v == "ETAG" {
					v = etag
				}
				req.Header.Set(r.hdr[i], v)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s: %s %s%s: %v", proto, r.method, r.host, r.uri, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			must(t, err)
			a := answer{status: resp.StatusCode, header: map[string]string{}, body: string(b), proto: resp.Proto}
			for _, k := range compared {
				a.header[k] = resp.Header.Get(k)
			}
			if r.method == "HEAD" || resp.ContentLength >= 0 {
				a.header["Content-Length"] = fmt.Sprint(resp.ContentLength)
			}
			if r.uri == "/" && r.method == "GET" && etag == "" {
				etag = resp.Header.Get("Etag")
			}
			out = append(out, a)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		must(t, h.proxy.Shutdown(ctx))
		must(t, h.m.Close(ctx))
		now := time.Now()
		usage := map[string]meter.Values{}
		for _, org := range []string{"acme", "beta", "nobody"} {
			pts, err := h.sink.Hourly(ctx, org, now.Add(-2*time.Hour), now.Add(time.Hour))
			must(t, err)
			_, v, _ := meter.Aggregate(pts, meter.StepMonth)
			usage[org] = v
		}
		return out, usage, h
	}

	a1, u1, h1 := run("h1")
	a2, u2, h2 := run("h2")
	name := func(i int) string {
		if i >= len(requests) {
			return "conditional GET /"
		}
		return requests[i].method + " " + requests[i].host + requests[i].uri
	}
	for i := range a1 {
		x, y := a1[i], a2[i]
		if x.proto != "HTTP/1.1" || y.proto != "HTTP/2.0" {
			t.Fatalf("request %d went over %s and %s", i, x.proto, y.proto)
		}
		if x.status != y.status || x.body != y.body {
			t.Errorf("request %d (%s): h1 %d %q, h2 %d %q", i, name(i), x.status, trim(x.body), y.status, trim(y.body))
		}
		for _, k := range compared {
			if x.header[k] != y.header[k] {
				t.Errorf("request %d (%s): header %s: h1 %q, h2 %q", i, name(i), k, x.header[k], y.header[k])
			}
		}
	}
	if a1[len(a1)-1].status != http.StatusNotModified || !strings.Contains(a1[13].body, "proto-fwd=https") {
		t.Errorf("conditional GET %d, upstream saw %q", a1[len(a1)-1].status, a1[13].body)
	}
	for org, v := range u1 {
		if v != u2[org] {
			t.Errorf("org %s metered h1 %+v, h2 %+v", org, v, u2[org])
		}
	}
	if u1["acme"].EgressBytes == 0 || u1["beta"].IngressBytes != 10000 || u1["acme"].Requests != 13 || u1["beta"].Requests != 2 || !u1["nobody"].IsZero() {
		t.Errorf("metered %+v", u1)
	}
	if got := testutil.ToFloat64(h2.proxy.metrics.h2Requests); got != float64(len(a2)) {
		t.Errorf("h2 requests metric %v, want %d", got, len(a2))
	}
	if got := testutil.ToFloat64(h1.proxy.metrics.handshakes[1]); got < 1 {
		t.Errorf("http/1.1 handshakes %v", got)
	}
}

func trim(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// TestTLSListenerRejectsGarbage: a client that is not speaking TLS gets the
// connection closed, and the failure is counted; nothing panics.
func TestTLSListenerRejectsGarbage(t *testing.T) {
	h := newTLSHarness(t, "http://127.0.0.1:1")
	c, err := net.Dial("tcp", h.addr)
	must(t, err)
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: www.example\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if bytes.Contains(b, []byte("200 OK")) {
		t.Fatalf("plain HTTP on the TLS port was answered: %q", b)
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(h.proxy.metrics.handshakeFailures) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("handshake failure not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
