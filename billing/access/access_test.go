package access

import (
	"testing"

	"golang.org/x/time/rate"
)

// TestGateSet: a throttle brings a limiter at the given rate, kept while the
// rate stays (the bucket survives re-evaluation) and replaced when it
// changes; any other decision drops it.
func TestGateSet(t *testing.T) {
	var g Gate
	if g.Decision() != Allow || g.Limiter() != nil {
		t.Fatalf("zero gate: %v, limiter %v", g.Decision(), g.Limiter())
	}
	g.Set(Throttle, 100)
	l := g.Limiter()
	if g.Decision() != Throttle || l == nil || l.Limit() != rate.Limit(100) || l.Burst() != throttleBurst {
		t.Fatalf("throttled: %v, limiter %v", g.Decision(), l)
	}
	g.Set(Throttle, 100)
	if g.Limiter() != l {
		t.Fatal("same rate: the limiter was replaced")
	}
	g.Set(Throttle, 200)
	if g.Limiter() == l || g.Limiter().Limit() != rate.Limit(200) {
		t.Fatalf("new rate: limiter %v", g.Limiter())
	}
	for _, d := range []Decision{Allow, BlockQuota, BlockExpired, BlockSuspended, BlockStorage} {
		g.Set(Throttle, 100)
		g.Set(d, 0)
		if g.Decision() != d || g.Limiter() != nil {
			t.Fatalf("%v: decision %v, limiter %v", d, g.Decision(), g.Limiter())
		}
	}
}

func TestDecisionNames(t *testing.T) {
	want := []string{"allow", "throttle", "block_quota", "block_expired", "block_suspended", "block_storage"}
	ds := Decisions()
	if len(ds) != len(want) {
		t.Fatalf("%d decisions, want %d", len(ds), len(want))
	}
	for i, d := range ds {
		if d != Decision(i) || d.String() != want[i] {
			t.Errorf("Decisions()[%d] = %d %q, want %d %q", i, d, d, i, want[i])
		}
	}
	if s := Decision(len(want)).String(); s != "unknown" {
		t.Errorf("an undefined decision is %q", s)
	}
}

// BenchmarkGateDecision is the request path's whole enforcement cost for an
// allowed org: one atomic load.
func BenchmarkGateDecision(b *testing.B) {
	g := &Gate{}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if g.Decision() == Allow {
			n++
		}
	}
	if n == 0 {
		b.Fatal("never allowed")
	}
}

func TestBlocks(t *testing.T) {
	for _, d := range Decisions() {
		if want := d != Allow && d != Throttle; d.Blocks() != want {
			t.Errorf("%v.Blocks() = %v, want %v", d, d.Blocks(), want)
		}
	}
}

func TestExcluded(t *testing.T) {
	var g Gate
	if g.Excluded() != nil {
		t.Fatal("a new gate excludes")
	}
	g.SetExcluded(&Excluded{Sites: map[string]struct{}{}, Domains: map[string]struct{}{}})
	if g.Excluded() != nil {
		t.Fatal("an empty set is kept")
	}
	g.SetExcluded(&Excluded{Sites: map[string]struct{}{"s2": {}}, Domains: map[string]struct{}{"www.a.example": {}}})
	ex := g.Excluded()
	for _, c := range []struct {
		site, domain string
		want         bool
	}{{"s2", "b.example", true}, {"s1", "www.a.example", true}, {"s1", "a.example", false}} {
		if got := ex.Has(c.site, []byte(c.domain)); got != c.want {
			t.Errorf("Has(%s, %s) = %v, want %v", c.site, c.domain, got, c.want)
		}
	}
	g.SetExcluded(nil)
	if g.Excluded() != nil {
		t.Fatal("SetExcluded(nil) kept the set")
	}
}
