package billing

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/meter"
)

// pageUsage is a meter.Reader answering PeriodTotals with one page made
// beforehand (so a pass's allocations are billing's own).
type pageUsage struct{ page []meter.OrgTotal }

func (u *pageUsage) Hourly(context.Context, string, time.Time, time.Time) ([]meter.Point, error) {
	return nil, nil
}

func (u *pageUsage) PeriodTotals(context.Context, string, string, int) ([]meter.OrgTotal, string, error) {
	return u.page, "", nil
}

type nopSink struct{}

func (nopSink) Apply(context.Context, *meter.Batch) error { return nil }

// TestPassHoldsNoMapOfIdleOrgs: at a registry of many orgs, each storing
// bytes and listed in the period's totals for them, with no egress and on
// plans without a storage quota, a pass keeps no map entry for them: it
// neither holds a map of every org until the next pass nor makes one as
// garbage every pass (at a million orgs, some 80 MB a pass, which made a 1 GB
// heap collect often). The org with egress and a quota still decides.
func TestPassHoldsNoMapOfIdleOrgs(t *testing.T) {
	f := newFixture(t) // acme on "small": egress quota 1000, no storage quota
	ctx := context.Background()
	const idle = 20_000
	usage := &pageUsage{page: []meter.OrgTotal{{Org: "acme", Values: meter.Values{EgressBytes: 2000}}}}
	m, err := meter.New(meter.Config{}, meter.Options{Sink: nopSink{}, Node: "n1", Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	storage := meter.StorageMap{}
	storage.Set("acme", "www", "dir", 500)
	for i := range idle {
		org := fmt.Sprintf("org%06d", i)
		usage.page = append(usage.page, meter.OrgTotal{Org: org, Values: meter.Values{StorageByteSeconds: 60}})
		storage.Set(org, "www", "dir", 100)
	}
	m.ReplaceStorage(storage.Each)
	b, err := New(ctx, Config{Plans: []PlanConfig{{Name: "small", EgressBytes: 1000, ThrottleBPS: 100, Rank: 1}}},
		Options{Sites: f.reg, Store: f.st, Usage: usage, Storage: m, Metrics: prometheus.NewRegistry(), Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	gate := b.Gate("acme")
	b.Evaluate(ctx) // the first pass sets up what every pass reuses
	var before, after runtime.MemStats
	const passes = 5
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range passes {
		b.Evaluate(ctx)
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / passes
	t.Logf("%d bytes allocated per pass", per)
	if per > 64<<10 {
		t.Errorf("a pass allocates %d bytes with %d idle orgs, want at most 64 KiB (no map entry per idle org)", per, idle)
	}
	b.mu.Lock()
	held := len(b.usage) + len(b.storage)
	b.mu.Unlock()
	if held > 1 {
		t.Errorf("%d usage and storage entries held between passes, want acme's egress only", held)
	}
	if d := gate.Decision(); d != access.Throttle {
		t.Errorf("acme at 2000 bytes of a 1000 quota: %v, want throttled", d)
	}
}
