package meter

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// flakySink fails while down is set, and can fail after applying (the reply
// lost on the way back), to exercise retries.
type flakySink struct {
	mu            sync.Mutex
	inner         Sink
	down          bool
	failAfterDone bool
	applies       int
}

func (f *flakySink) Apply(ctx context.Context, b *Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if f.down {
		return errors.New("sink down")
	}
	err := f.inner.Apply(ctx, b)
	if err == nil && f.failAfterDone {
		return errors.New("reply lost")
	}
	return err
}

func (f *flakySink) set(down, failAfter bool) {
	f.mu.Lock()
	f.down, f.failAfterDone = down, failAfter
	f.mu.Unlock()
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newMeter(t *testing.T, cfg Config, sink Sink, spool Spool, clk *clock) (*Meter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(cfg, Options{Sink: sink, Spool: spool, Node: "n1", Metrics: reg, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func totals(t *testing.T, r Reader, org string, from, to time.Time) Values {
	t.Helper()
	pts, err := r.Hourly(context.Background(), org, from, to)
	if err != nil {
		t.Fatal(err)
	}
	_, v, err := Aggregate(pts, StepMonth)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFlushToSink(t *testing.T) {
	ctx := context.Background()
	b := newMemUsage()
	clk := &clock{t: time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)}
	m, reg := newMeter(t, Config{}, b, nil, clk)
	a := m.Counters("acme", "www", "dir")
	a2 := m.Counters("acme", "api", "upstream")
	z := m.Counters("zeta", "z", "dir")
	if m.Counters("acme", "www", "dir") != a {
		t.Fatal("Counters must return the same counters for the same (org, site)")
	}
	a.AddRequest()
	a.AddEgress(1000)
	a2.AddRequest()
	a2.AddEgress(10)
	a2.AddIngress(7)
	z.AddRequest()
	z.AddEgress(5)
	z.SetStorage(1000)
	clk.t = clk.t.Add(30 * time.Second)
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Next hour, next month.
	clk.t = time.Date(2026, 12, 1, 0, 0, 30, 0, time.UTC)
	a.AddRequest()
	a.AddEgress(1)
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing new: no batch at all.
	before := m.seq
	if err := m.Flush(ctx); err != nil || m.seq != before {
		t.Fatalf("an idle flush made a batch (seq %d -> %d, err %v)", before, m.seq, err)
	}

	nov, dec, _ := PeriodBounds("2026-11")
	_, decEnd, _ := PeriodBounds("2026-12")
	if got := totals(t, b, "acme", nov, decEnd); got != (Values{EgressBytes: 1011, Requests: 3, IngressBytes: 7}) {
		t.Fatalf("acme totals = %+v", got)
	}
	// z stores 1000 bytes: 30 s in November, 60 s more in December.
	if got := totals(t, b, "zeta", nov, dec); got.StorageByteSeconds != 30000 {
		t.Fatalf("zeta storage in November = %d; want 30000", got.StorageByteSeconds)
	}
	if got := totals(t, b, "zeta", dec, decEnd); got.StorageByteSeconds != 60000 {
		t.Fatalf("zeta storage in December = %d; want 60000", got.StorageByteSeconds)
	}
	pts, _ := b.Hourly(ctx, "acme", nov, decEnd)
	if len(pts) != 2 || !pts[0].Start.Equal(time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)) {
		t.Fatalf("hourly points = %+v", pts)
	}
	novTotals, next, err := b.PeriodTotals(ctx, "2026-11", "", 10)
	if err != nil || next != "" || len(novTotals) != 2 || novTotals[0].Org != "acme" || novTotals[0].EgressBytes != 1010 {
		t.Fatalf("November totals = %+v next %q err %v", novTotals, next, err)
	}
	decTotals, _, _ := b.PeriodTotals(ctx, "2026-12", "", 10)
	if len(decTotals) != 2 || decTotals[0].Org != "acme" || decTotals[0].EgressBytes != 1 || decTotals[1].StorageByteSeconds != 60000 {
		t.Fatalf("December totals = %+v", decTotals)
	}
	if got := testutil.ToFloat64(m.m.egress.WithLabelValues("dir")); got != 1006 {
		t.Fatalf("tollgate_meter_egress_bytes_total{kind=dir} = %v", got)
	}
	_ = reg
}

func TestSinkOutageLosesNothing(t *testing.T) {
	ctx := context.Background()
	b := newMemUsage()
	sink := &flakySink{inner: b}
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m, reg := newMeter(t, Config{MaxPending: 1000}, sink, nil, clk)
	c := m.Counters("o", "s", "dir")
	var want int64
	serve := func(n int) {
		c.AddEgress(n)
		c.AddRequest()
		want += int64(n)
	}
	serve(100)
	sink.set(true, false)
	for range 5 {
		serve(10)
		if err := m.Flush(ctx); err == nil {
			t.Fatal("flush to a down sink succeeded")
		}
	}
	if m.Pending() != 5 {
		t.Fatalf("pending = %d; want 5", m.Pending())
	}
	// The sink applies but the reply is lost: the batch is sent again and
	// must not count twice.
	sink.set(false, true)
	serve(1)
	m.Flush(ctx)
	sink.set(false, false)
	serve(2)
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Pending() != 0 {
		t.Fatalf("pending = %d after recovery", m.Pending())
	}
	got := totals(t, b, "o", clk.t.Add(-time.Hour), clk.t.Add(time.Hour))
	if got.EgressBytes != want || got.Requests != 8 {
		t.Fatalf("after the outage: %+v; want egress %d, 8 requests", got, want)
	}
	if n := testutil.ToFloat64(m.m.flushErrors); n != 6 {
		t.Fatalf("flush errors = %v; want 6", n)
	}
	_ = reg
}

func TestSpoolPastMaxPendingAndAtClose(t *testing.T) {
	ctx := context.Background()
	target := newMemUsage()
	spool := newMemUsage()
	sink := &flakySink{inner: target, down: true}
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m, _ := newMeter(t, Config{MaxPending: 2}, sink, spool, clk)
	c := m.Counters("o", "s", "dir")
	for i := range 5 {
		c.AddEgress(i + 1) // 15 in all
		m.Flush(ctx)
	}
	spooled, _ := spool.Load(ctx)
	if len(spooled)+m.Pending() != 5 || len(spooled) == 0 {
		t.Fatalf("spooled %d, pending %d; want 5 batches in all, some spooled", len(spooled), m.Pending())
	}
	c.AddEgress(100)
	if err := m.Close(ctx); err != nil {
		t.Fatalf("Close with a down sink and a spool: %v", err)
	}
	spooled, _ = spool.Load(ctx)
	if len(spooled) != 6 {
		t.Fatalf("after Close: %d spooled; want 6", len(spooled))
	}
	// A new process (same spool, sink back) sends them in order.
	sink.set(false, false)
	m2, _ := newMeter(t, Config{}, sink, spool, clk)
	if err := m2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := totals(t, target, "o", clk.t.Add(-time.Hour), clk.t.Add(time.Hour)).EgressBytes; got != 115 {
		t.Fatalf("egress after replay = %d; want 115", got)
	}
	if left, _ := spool.Load(ctx); len(left) != 0 {
		t.Fatalf("%d batches left in the spool", len(left))
	}
}

func TestDropPastMaxPendingWithoutSpool(t *testing.T) {
	sink := &flakySink{down: true}
	clk := &clock{t: time.Now()}
	m, _ := newMeter(t, Config{MaxPending: 3}, sink, nil, clk)
	c := m.Counters("o", "s", "dir")
	for range 5 {
		c.AddEgress(1)
		m.Flush(context.Background())
	}
	if m.Pending() != 3 || testutil.ToFloat64(m.m.dropped) != 2 {
		t.Fatalf("pending %d dropped %v; want 3 and 2", m.Pending(), testutil.ToFloat64(m.m.dropped))
	}
}

func TestConcurrentCountingAndFlushing(t *testing.T) {
	b := newMemUsage()
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m, _ := newMeter(t, Config{}, b, nil, clk)
	c := m.Counters("o", "s", "dir")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				m.Flush(context.Background())
			}
		}
	}()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10000 {
				c.AddEgress(3)
				c.AddRequest()
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := totals(t, b, "o", clk.t.Add(-time.Hour), clk.t.Add(time.Hour))
	if got.EgressBytes != 120000 || got.Requests != 40000 {
		t.Fatalf("got %+v; want 120000 bytes, 40000 requests", got)
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{FlushInterval: time.Nanosecond, MaxPending: -1, HourlyRetention: time.Hour, PerOrgMetricsMax: -1}
	err := c.Validate()
	for _, key := range []string{"meter.flush_interval", "meter.max_pending", "meter.hourly_retention", "meter.per_org_metrics_max"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate does not name %s: %v", key, err)
		}
	}
}

func TestPerOrgMetricsCapped(t *testing.T) {
	b := newMemUsage()
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m, reg := newMeter(t, Config{PerOrgMetrics: true, PerOrgMetricsMax: 2}, b, nil, clk)
	for _, org := range []string{"a", "b", "c", "d"} {
		c := m.Counters(org, "s", "dir")
		c.AddEgress(10)
		c.AddRequest()
	}
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "tollgate_meter_org_egress_bytes_total"); n != 3 {
		t.Fatalf("%d per-org series; want 2 orgs + _other", n)
	}
	if got := testutil.ToFloat64(m.m.orgEgress.WithLabelValues("_other")); got != 20 {
		t.Fatalf("_other = %v; want 20", got)
	}
}

func TestReplaceStorage(t *testing.T) {
	b := newMemUsage()
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m, _ := newMeter(t, Config{}, b, nil, clk)
	if byOrg, ok := m.StorageByOrgOf(nil); ok || byOrg != nil {
		t.Fatalf("StorageByOrg before any measurement: %v, %v", byOrg, ok)
	}
	s := StorageMap{}
	s.Set("a", "x", "dir", 100)
	s.Set("a", "z", "dir", 7)
	s.Set("b", "y", "gitea", 50)
	m.ReplaceStorage(s.Each)
	if byOrg, ok := m.StorageByOrgOf(nil); !ok || !maps.Equal(byOrg, map[string]int64{"a": 107, "b": 50}) {
		t.Fatalf("StorageByOrg: %v, %v", byOrg, ok)
	}
	s = StorageMap{}
	s.Set("a", "x", "dir", 100)
	s.Set("b", "y", "gitea", 50)
	m.ReplaceStorage(s.Each)
	if m.OrgStorage("a") != 100 || m.Storage("b", "y") != 50 {
		t.Fatalf("storage a=%d b/y=%d", m.OrgStorage("a"), m.Storage("b", "y"))
	}
	// b's site now bills org c: b stops accruing at once.
	s2 := StorageMap{}
	s2.Set("a", "x", "dir", 100)
	s2.Set("c", "y", "gitea", 50)
	m.ReplaceStorage(s2.Each)
	if m.OrgStorage("b") != 0 || m.OrgStorage("c") != 50 {
		t.Fatalf("after the move: b=%d c=%d", m.OrgStorage("b"), m.OrgStorage("c"))
	}
}

// TestRefundOnlyFlush: a flush whose window holds only a refund (the proxy
// takes back bytes an aborted client never acknowledged, after the charge
// was flushed) does not panic on the Prometheus counters (they cannot go
// down): it is counted as refunded, egress minus refunded is the net, and
// the usage store has the net.
func TestRefundOnlyFlush(t *testing.T) {
	b := newMemUsage()
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m, _ := newMeter(t, Config{PerOrgMetrics: true, PerOrgMetricsMax: 10}, b, nil, clk)
	c := m.Counters("acme", "www", "dir")
	c.AddEgress(100)
	c.AddRequest()
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.AddEgress(-40)
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"egress", testutil.ToFloat64(m.m.egress.WithLabelValues("dir")), 100},
		{"refunded", testutil.ToFloat64(m.m.refunded.WithLabelValues("dir")), 40},
		{"org egress", testutil.ToFloat64(m.m.orgEgress.WithLabelValues("acme")), 100},
		{"org refunded", testutil.ToFloat64(m.m.orgRefund.WithLabelValues("acme")), 40},
	} {
		if tc.got != tc.want {
			t.Errorf("%s counter = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if v := totals(t, b, "acme", clk.t.Add(-time.Hour), clk.t.Add(time.Hour)); v.EgressBytes != 60 || v.Requests != 1 {
		t.Fatalf("stored %+v, want 60 bytes net and 1 request", v)
	}
}
