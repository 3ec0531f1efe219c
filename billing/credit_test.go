package billing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

func TestHourCharges(t *testing.T) {
	h0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	pt := func(h int, egress, bs int64) meter.Point {
		return meter.Point{Start: h0.Add(time.Duration(h) * time.Hour), Values: meter.Values{EgressBytes: egress, StorageByteSeconds: bs}}
	}
	tests := []struct {
		name string
		plan sites.Plan
		pts  []meter.Point
		want []int64 // amounts, hours with a charge only
	}{
		{"within the included egress", sites.Plan{EgressBytes: 1 << 30, OveragePricePerGiB: 100},
			[]meter.Point{pt(0, 1<<29, 0), pt(1, 1<<29, 0)}, nil},
		{"beyond it, rounded down over the period", sites.Plan{EgressBytes: 1 << 30, OveragePricePerGiB: 100},
			[]meter.Point{pt(0, 1<<30, 0), pt(1, 1<<28, 0), pt(2, 1<<28, 0), pt(3, 1<<27, 0), pt(4, 1<<27, 0)},
			[]int64{25, 25, 12, 13}}, // 12.5 + 12.5: the period pays 75, not 74
		{"nothing included", sites.Plan{OveragePricePerGiB: 3},
			[]meter.Point{pt(0, 1<<30, 0), pt(5, 1<<30, 0)}, []int64{3, 3}},
		{"storage pro rata", sites.Plan{StorageBytes: 1 << 30, StoragePricePerGiBMonth: 720},
			[]meter.Point{pt(0, 0, 2*(1<<30)*3600), pt(1, 0, (1<<30)*3600)}, []int64{1}}, // 1 GiB over for 1 h of 720
		{"huge numbers do not overflow", sites.Plan{OveragePricePerGiB: 1_000_000, StoragePricePerGiBMonth: 1_000_000},
			// 2^20 GiB × 10^6, and floor(2^60 B·s × 10^6 ÷ (2^30 × 2592000 s))
			[]meter.Point{pt(0, 1<<50, 1<<60)}, []int64{1<<20*1_000_000 + (1<<30)*1_000_000/2592000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int64
			for _, c := range HourCharges(&tt.plan, tt.pts) {
				got = append(got, c.Amount)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("charges %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCreditTwoNodesDrawOnce: two Billing instances on one Redis (ledger
// and usage) evaluate at the same times, concurrently: every hour is drawn
// once, the sum is the period's price, and the hooks of each crossing fire
// once in all.
func TestCreditTwoNodesDrawOnce(t *testing.T) {
	redistest.SkipShort(t)
	srv := redistest.Start(t)
	rc := srv.NewClient(t)
	ctx := context.Background()
	usage := store.NewRedisUsage(rc, store.RedisUsageOptions{})
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := clocktest.New(start)
	plan := PlanConfig{Name: "payg", Prepaid: true, EgressBytes: 1 << 30, OveragePricePerGiB: 70, GracePeriod: 24 * time.Hour}
	hooks := &recorder{}
	var nodes []*Billing
	for range 2 {
		st := storetest.Open(t) // each node's own registry and fired hooks
		reg, err := sites.New(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		ledger, err := credit.New(credit.Config{Store: store.NewRedisCredit(rc), Currency: "eur", Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(ctx, Config{Plans: []PlanConfig{plan}, CreditLowThreshold: 300}, Options{Sites: reg, Store: st, Usage: usage,
			Credits: ledger, Hooks: hooks, Metrics: prometheus.NewRegistry(), Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "payg", State: sites.StateActive}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, b)
	}
	if _, _, _, err := nodes[0].Credit(ctx, credit.Entry{Org: "acme", Amount: 1000, Kind: credit.Grant, Source: "op-1", Actor: ActorOperator}); err != nil {
		t.Fatal(err)
	}
	var egress int64
	for h := range 72 {
		hour := start.Add(time.Duration(h) * time.Hour)
		v := int64(h%7+1)<<27 + 999 // 128 MiB to 896 MiB and change
		egress += v
		b := &meter.Batch{Node: "n1", Seq: uint64(h + 1), Time: hour.Add(time.Minute), Deltas: []meter.Delta{{Org: "acme", Site: "www", Values: meter.Values{EgressBytes: v}}}}
		if err := usage.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
		clock.Set(hour.Add(time.Hour + 5*time.Minute))
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(func() { n.Evaluate(ctx) })
		}
		wg.Wait()
	}
	ledger, _ := credit.New(credit.Config{Store: store.NewRedisCredit(rc), Currency: "eur"})
	entries, err := ledger.Entries(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	drawn, seen := int64(0), map[string]bool{}
	for _, e := range entries {
		if e.Kind != credit.Usage {
			continue
		}
		if seen[e.Source] {
			t.Fatalf("%s charged twice", e.Source)
		}
		seen[e.Source] = true
		drawn -= e.Amount
	}
	if want := (egress - plan.EgressBytes) * 70 / (1 << 30); drawn != want {
		t.Fatalf("drawn %d, want %d", drawn, want)
	}
	if bal, _ := ledger.Balance(ctx, "acme"); bal != 1000-drawn || entries[len(entries)-1].Balance != bal {
		t.Fatalf("balance %d, entries end at %d, want %d", bal, entries[len(entries)-1].Balance, 1000-drawn)
	}
	for typ, want := range map[string]int{"credit.topped_up": 1, "credit.low": 1, "credit.exhausted": 1} {
		if got := hooks.count(typ); got != want {
			t.Errorf("%s fired %d times across both nodes, want %d", typ, got, want)
		}
	}
}

// TestCreditRefusals: entries the ledger refuses, and an unknown org.
func TestCreditRefusals(t *testing.T) {
	st := storetest.Open(t)
	ctx := context.Background()
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := credit.New(credit.Config{Store: store.NewBoltCredit(st), Currency: "eur"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(ctx, Config{}, Options{Sites: reg, Store: st, Credits: ledger, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "free"}); err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		e    credit.Entry
		want error
	}{
		"unknown org":         {credit.Entry{Org: "nope", Amount: 1, Kind: credit.Grant, Source: "s"}, sites.ErrNotFound},
		"negative grant":      {credit.Entry{Org: "acme", Amount: -1, Kind: credit.Grant, Source: "s"}, credit.ErrInvalid},
		"positive usage":      {credit.Entry{Org: "acme", Amount: 1, Kind: credit.Usage, Source: "s"}, credit.ErrInvalid},
		"unknown kind":        {credit.Entry{Org: "acme", Amount: 1, Kind: "gift", Source: "s"}, credit.ErrInvalid},
		"no source":           {credit.Entry{Org: "acme", Amount: 1, Kind: credit.Grant}, credit.ErrInvalid},
		"amount beyond 10^15": {credit.Entry{Org: "acme", Amount: credit.MaxAmount + 1, Kind: credit.Grant, Source: "s"}, credit.ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, _, err := b.Credit(ctx, tt.e); !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
}
