package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/store"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestMeteringAccuracy serves a known mix and requires the metered egress to
// equal, byte for byte, what the clients read (status lines, headers and
// bodies), attributed to the right org and site, with every request counted.
func TestMeteringAccuracy(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	sink := store.NewBoltUsage(st)
	m, err := meter.New(meter.Config{}, meter.Options{Sink: sink, Node: "test", Metrics: prometheus.NewRegistry()})
	must(t, err)
	h := newHarnessUsage(t, Config{}, Limits{}, m)

	// A second org with a proxied site that streams its answer in chunks.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		for i := range 5 {
			fmt.Fprintf(w, "chunk %d of %d (request body %d bytes)\n", i, 5, len(body))
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(upstream.Close)
	_, err = h.reg.CreateOrg(ctx, sites.Org{ID: "beta", Plan: "big"})
	must(t, err)
	_, err = h.reg.CreateSite(ctx, sites.Site{ID: "app", Org: "beta", Source: sites.Source{Type: sites.SourceUpstream, URL: upstream.URL}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "app", "app.example")
	must(t, err)

	index := h.do("GET", "www.example", "/")
	etag := string(index.Header.Peek("ETag"))
	acmeRequests := int64(1)
	for _, r := range []struct {
		method, uri string
		hdr         []string
	}{
		{"GET", "/4k.bin", nil},
		{"GET", "/", []string{"If-None-Match", etag}},
		{"GET", "/4k.bin", []string{"Range", "bytes=100-199"}},
		{"GET", "/app.js", []string{"Accept-Encoding", "gzip"}},
		{"GET", "/app.js", []string{"Accept-Encoding", "br"}},
		{"GET", "/large.bin", nil},
		{"HEAD", "/large.bin", nil},
		{"GET", "/missing", nil},
		{"POST", "/", nil},
	} {
		h.do(r.method, "www.example", r.uri, r.hdr...)
		acmeRequests++
	}
	acmeBytes := h.received.Swap(0)

	for range 3 {
		h.do("GET", "app.example", "/stream")
	}
	req, resp := newPost("app.example", "/upload", strings.Repeat("x", 10000))
	must(t, h.client.DoTimeout(req, resp, 5*time.Second))
	if !strings.Contains(string(resp.Body()), "request body 10000 bytes") {
		t.Fatalf("upload answer: %q", resp.Body())
	}
	betaBytes := h.received.Swap(0)

	// Unknown hosts are nobody's usage.
	h.do("GET", "nobody.example", "/")
	h.received.Store(0)

	// An aborted download: the client reads a little and hangs up.
	conn := h.dialRaw(t)
	fmt.Fprintf(conn, "GET /large.bin HTTP/1.1\r\nHost: www.example\r\n\r\n")
	head := make([]byte, 1000)
	if _, err := io.ReadFull(bufio.NewReader(conn), head); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	acmeRequests++

	// SIGTERM-style: the proxy stops, then the meter's final flush.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	must(t, h.proxy.Shutdown(sctx))
	must(t, m.Close(ctx))

	now := time.Now()
	get := func(org string) meter.Values {
		pts, err := sink.Hourly(ctx, org, now.Add(-2*time.Hour), now.Add(time.Hour))
		must(t, err)
		_, v, _ := meter.Aggregate(pts, meter.StepMonth)
		return v
	}
	acme, beta := get("acme"), get("beta")
	if beta.EgressBytes != betaBytes || beta.Requests != 4 || beta.IngressBytes != 10000 {
		t.Errorf("beta metered %+v; clients read %d bytes in 4 requests, sent 10000 body bytes", beta, betaBytes)
	}
	// The aborted download was charged what was written: at least what the
	// client read, at most the whole answer.
	aborted := acme.EgressBytes - acmeBytes
	if acme.Requests != acmeRequests || aborted < 1000 || aborted > int64(len(siteFiles["large.bin"]))+1024 {
		t.Errorf("acme metered %+v; clients read %d bytes in %d requests, then an aborted download charged %d bytes",
			acme, acmeBytes, acmeRequests, aborted)
	}
	if got := get("nobody"); !got.IsZero() {
		t.Errorf("usage charged for an unknown host: %+v", got)
	}
}
