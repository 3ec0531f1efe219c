package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// fakeGates hands out one gate per org, set by the test.
type fakeGates struct {
	mu sync.Mutex
	m  map[string]*access.Gate
}

func (f *fakeGates) Gate(org string) *access.Gate {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]*access.Gate{}
	}
	if f.m[org] == nil {
		f.m[org] = &access.Gate{}
	}
	return f.m[org]
}

// TestEnforcement: each decision answers as promised; blocked requests
// reach no upstream and are nobody's usage.
func TestEnforcement(t *testing.T) {
	var upstreamHits atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamHits.Add(1)
		io.WriteString(w, "from upstream")
	}))
	t.Cleanup(upstream.Close)
	sink := store.NewBoltUsage(storetest.Open(t))
	m, err := meter.New(meter.Config{}, meter.Options{Sink: sink, Node: "t", Metrics: prometheus.NewRegistry()})
	must(t, err)
	gates := &fakeGates{}
	h := newHarnessWith(t, Config{}, Limits{}, func(o *Options) { o.Usage, o.Gates = m, gates })
	ctx := context.Background()
	_, err = h.reg.CreateSite(ctx, sites.Site{ID: "app", Org: "acme", Source: sites.Source{Type: sites.SourceUpstream, URL: upstream.URL}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "app", "app.example")
	must(t, err)
	gate := gates.Gate("acme")
	for _, tc := range []struct {
		d      access.Decision
		status int
		body   string
	}{
		{access.BlockQuota, 429, "Too many requests"},
		{access.BlockExpired, 402, "paused"},
		{access.BlockSuspended, 403, "not allowed"},
		{access.Allow, 200, "from upstream"},
	} {
		gate.Set(tc.d, 0)
		for _, host := range []string{"www.example", "app.example"} {
			resp := h.do("GET", host, "/")
			if resp.StatusCode() != tc.status || (host == "app.example" && !strings.Contains(string(resp.Body()), tc.body)) {
				t.Errorf("%v on %s: %d %q, want %d %q", tc.d, host, resp.StatusCode(), resp.Body(), tc.status, tc.body)
			}
			if tc.d == access.BlockQuota && string(resp.Header.Peek("Retry-After")) == "" {
				t.Error("429 without Retry-After")
			}
		}
	}
	if n := upstreamHits.Load(); n != 1 {
		t.Fatalf("upstream reached %d times; blocked requests must not reach it", n)
	}
	must(t, h.proxy.Shutdown(ctx))
	must(t, m.Close(ctx))
	now := time.Now()
	pts, err := sink.Hourly(ctx, "acme", now.Add(-time.Hour), now.Add(time.Hour))
	must(t, err)
	_, v, _ := meter.Aggregate(pts, meter.StepMonth)
	if v.Requests != 2 {
		t.Fatalf("metered %d requests; only the 2 allowed ones count", v.Requests)
	}
}

// TestThrottleBandwidth: a throttled org's download runs at throttle_bps
// (after the bucket's first burst), within 10 %; the next request after
// the throttle lifts runs at full speed on the same connection.
func TestThrottleBandwidth(t *testing.T) {
	gates := &fakeGates{}
	h := newHarnessWith(t, Config{}, Limits{}, func(o *Options) { o.Usage, o.Gates = newTestMeter(t), gates })
	const bps = 200_000
	gates.Gate("acme").Set(access.Throttle, bps)
	h.received.Store(0)
	start := time.Now()
	resp := h.do("GET", "www.example", "/large.bin")
	took := time.Since(start)
	if resp.StatusCode() != 200 || len(resp.Body()) != len(siteFiles["large.bin"]) {
		t.Fatalf("throttled download: %d, %d bytes", resp.StatusCode(), len(resp.Body()))
	}
	total := h.received.Load()
	burst := int64(16 << 10)
	want := time.Duration(float64(total-burst) / bps * float64(time.Second))
	t.Logf("%d bytes in %v at %d B/s (expected %v)", total, took, bps, want)
	if took < want*9/10 || took > want*11/10 {
		t.Fatalf("took %v, want %v ± 10 %%", took, want)
	}
	gates.Gate("acme").Set(access.Allow, 0)
	start = time.Now()
	h.do("GET", "www.example", "/large.bin")
	if d := time.Since(start); d > want/4 {
		t.Fatalf("unthrottled download took %v", d)
	}
}
