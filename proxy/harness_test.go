package proxy

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/storetest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// harness is a proxy on an in-memory listener over a real registry (bbolt in
// a temp dir) and a real site directory.
type harness struct {
	t       testing.TB
	reg     *sites.Registry
	proxy   *Proxy
	metrics *prometheus.Registry
	client  *fasthttp.Client
	root    string // the "www" site's directory
	parent  string // holds a secret file outside the site root
	ln      *fasthttputil.InmemoryListener
	// received counts the bytes clients read from the proxy.
	received atomic.Int64
}

// countingConn counts the bytes read from the server.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func newHarness(t testing.TB, cfg Config, limits Limits) *harness {
	t.Helper()
	return newHarnessUsage(t, cfg, limits, nil)
}

// newHarnessUsage is newHarness with metering into usage (nil: off).
func newHarnessUsage(t testing.TB, cfg Config, limits Limits, usage Usage) *harness {
	t.Helper()
	return newHarnessWith(t, cfg, limits, func(o *Options) { o.Usage = usage })
}

// newHarnessWith is newHarness with options set by opt.
func newHarnessWith(t testing.TB, cfg Config, limits Limits, opt func(*Options)) *harness {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	root := filepath.Join(parent, "www")
	for name, body := range siteFiles {
		p := filepath.Join(root, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(body), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(parent, "secret.txt"), []byte(secret), 0o644))
	must(t, os.Symlink(filepath.Join(parent, "secret.txt"), filepath.Join(root, "leak.txt")))

	_, err = reg.PutPlan(ctx, sites.Plan{Name: "big"})
	must(t, err)
	_, err = reg.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "big"})
	must(t, err)
	_, err = reg.CreateSite(ctx, sites.Site{ID: "www", Org: "acme", Source: sites.Source{Type: sites.SourceDir, Path: root}})
	must(t, err)
	_, err = reg.AttachDomain(ctx, "www", "www.example")
	must(t, err)

	metrics := prometheus.NewRegistry()
	opts := Options{Registry: reg, Cache: content.NewCache(sites.Config{MaxCachedFile: 64 << 10}), Metrics: metrics}
	opt(&opts)
	p, err := New(cfg, limits, opts)
	must(t, err)
	ln := fasthttputil.NewInmemoryListener()
	go p.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		ln.Close()
	})
	h := &harness{t: t, reg: reg, metrics: metrics, root: root, parent: parent, ln: ln}
	c := &fasthttp.Client{
		Dial: func(string) (net.Conn, error) {
			conn, err := ln.Dial()
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: conn, n: &h.received}, nil
		},
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		ReadBufferSize:                64 << 10,
	}
	h.proxy, h.client = p, c
	return h
}

const secret = "TOP-SECRET-OUTSIDE-ROOT"

var siteFiles = map[string]string{
	"index.html":      "<h1>home</h1>",
	"about.html":      "<h1>about</h1>",
	"404.html":        "<h1>custom not found</h1>",
	"docs/index.html": "<h1>docs</h1>",
	"app.js":          "console.log('hello, tollgate');\n" + repeat("var x = 1;\n", 200),
	"4k.bin":          repeat("\x01", 4096),
	"large.bin":       repeat("0123456789abcdef", 8192), // 128 KiB: streamed, not cached
	".env":            "hidden",
}

func repeat(s string, n int) string {
	b := make([]byte, 0, len(s)*n)
	for range n {
		b = append(b, s...)
	}
	return string(b)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// do sends a raw request line + headers for host and returns the response.
func (h *harness) do(method, host, uri string, headers ...string) *fasthttp.Response {
	h.t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.URI().DisablePathNormalizing = true
	req.Header.SetHost(host)
	req.UseHostHeader = true
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp := &fasthttp.Response{}
	if method == fasthttp.MethodHead {
		resp.SkipBody = true
	}
	if err := h.client.DoTimeout(req, resp, 5*time.Second); err != nil {
		h.t.Fatalf("%s %s%s: %v", method, host, uri, err)
	}
	return resp
}

func newCtx(host, uri string, headers ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetHost(host)
	req.UseHostHeader = true
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return ctx
}

func newPost(host, uri, body string) (*fasthttp.Request, *fasthttp.Response) {
	req := &fasthttp.Request{}
	req.Header.SetMethod("POST")
	req.SetRequestURI(uri)
	req.Header.SetHost(host)
	req.UseHostHeader = true
	req.SetBodyString(body)
	return req, &fasthttp.Response{}
}

// newTestMeter is a meter over a throw-away bbolt store.
func newTestMeter(tb testing.TB) *meter.Meter {
	m, err := meter.New(meter.Config{}, meter.Options{Sink: store.NewBoltUsage(storetest.Open(tb)), Node: "t", Metrics: prometheus.NewRegistry()})
	must(tb, err)
	return m
}
