package billing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/sites"
)

// newComplianceFixture is newFixture with plans that limit storage, sites
// and domains, graces of ten seconds and a StorageReader.
func newComplianceFixture(t *testing.T) (*fixture, *orgStorage) {
	t.Helper()
	f := newFixture(t)
	storage := &orgStorage{m: map[string]int64{}}
	cfg := Config{StorageGrace: 10 * time.Second, DowngradeGrace: 10 * time.Second, Plans: []PlanConfig{
		{Name: "small", Rank: 1, EgressBytes: 1000, StorageBytes: 1000, Sites: 1, Domains: 1},
		{Name: "big", Rank: 2, EgressBytes: 1_000_000, StorageBytes: 1_000_000, Sites: 10, Domains: 10},
	}}
	b, err := New(context.Background(), cfg, Options{Sites: f.reg, Store: f.st, Usage: f.usage, Hooks: f.hooks,
		Storage: storage, Metrics: prometheus.NewRegistry(), Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	f.b = b
	return f, storage
}

// eventsOf returns the org's recorded events of one field, as "from→to".
func eventsOf(t *testing.T, f *fixture, field string) []string {
	t.Helper()
	events, err := f.b.Events(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range events {
		if e.Field == field {
			out = append(out, e.From+"→"+e.To)
		}
	}
	return out
}

// TestStorageQuotaBindsAfterGrace: an org over its storage quota is served
// through storage_grace, then blocked (BlockStorage) until it is back under
// the quota or on a plan that holds it: an upgrade serves it at once.
func TestStorageQuotaBindsAfterGrace(t *testing.T) {
	f, storage := newComplianceFixture(t)
	ctx := context.Background()
	gate := f.b.Gate("acme")
	step := func(stored int64, advance time.Duration, want access.Decision) {
		t.Helper()
		f.now = f.now.Add(advance)
		storage.set("acme", stored)
		f.b.Evaluate(ctx)
		if got := gate.Decision(); got != want {
			t.Fatalf("storing %d at +%s: %v, want %v", stored, advance, got, want)
		}
	}
	step(500, 0, access.Allow)
	step(3000, time.Second, access.Allow)
	over := f.reg.Snapshot().Orgs.Get("acme").StorageOverSince
	if !over.Time().Equal(f.now) {
		t.Fatalf("storage_over_since %v, want %v", over, f.now)
	}
	step(3000, 9*time.Second, access.Allow) // within the grace
	step(3000, time.Second, access.BlockStorage)
	if f.hooks.count("org.blocked") != 1 {
		t.Fatalf("hooks: %+v", f.hooks.events)
	}

	f.apply(Change{Plan: "big", Actor: ActorOperator, Cause: "upgrade"})
	if gate.Decision() != access.Allow {
		t.Fatalf("after an upgrade: %v", gate.Decision())
	}
	step(3000, time.Second, access.Allow) // the pass clears storage_over_since
	if !f.reg.Snapshot().Orgs.Get("acme").StorageOverSince.IsZero() {
		t.Fatal("storage_over_since kept on a plan that holds the storage")
	}
	if f.hooks.count("org.restored") != 1 {
		t.Fatalf("hooks: %+v", f.hooks.events)
	}

	// Back on the small plan: a new grace starts; files removed end it.
	f.apply(Change{Plan: "small", Actor: ActorOperator, Cause: "downgrade", Force: true})
	step(3000, time.Second, access.Allow)
	step(3000, 10*time.Second, access.BlockStorage)
	step(999, time.Second, access.Allow)
	want := []string{"within→over", "over→within", "within→over", "over→within"}
	if got := eventsOf(t, f, "storage_quota"); !slices.Equal(got, want) {
		t.Fatalf("storage_quota events %v, want %v", got, want)
	}
}

// TestDowngradeExcessAfterGrace: an org with more sites and domains than
// its new plan allows sees the excess listed at once and not served after
// downgrade_grace; marks choose which sites stay; an upgrade serves all.
func TestDowngradeExcessAfterGrace(t *testing.T) {
	f, _ := newComplianceFixture(t)
	ctx := context.Background()
	f.apply(Change{Plan: "big", Actor: ActorOperator, Cause: "start big"})
	for _, s := range []struct{ id, domain string }{{"s1", "one.example"}, {"s2", "two.example"}, {"s3", "three.example"}} {
		if _, err := f.reg.CreateSite(ctx, sites.Site{ID: s.id, Org: "acme", Source: sites.Source{Type: sites.SourceDir, Path: t.TempDir()}}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.reg.AttachDomain(ctx, s.id, s.domain); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // distinct creation times
	}
	if _, err := f.reg.AttachDomain(ctx, "s1", "www.one.example"); err != nil {
		t.Fatal(err)
	}
	gate := f.b.Gate("acme")
	f.b.Evaluate(ctx)
	if op := f.b.OverPlan("acme"); op != nil {
		t.Fatalf("within the big plan: %+v", op)
	}

	f.apply(Change{Plan: "small", Actor: ActorOperator, Cause: "downgrade", Force: true})
	op := f.b.OverPlan("acme")
	if op == nil || !slices.Equal(op.Sites, []string{"s2", "s3"}) || !slices.Equal(op.Domains, []string{"www.one.example"}) || op.Enforced {
		t.Fatalf("right after the downgrade: %+v", op)
	}
	excluded := func(want ...string) {
		t.Helper()
		ex := gate.Excluded()
		var got []string
		if ex != nil {
			for id := range ex.Sites {
				got = append(got, id)
			}
			for d := range ex.Domains {
				got = append(got, d)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("excluded %v, want %v", got, want)
		}
	}
	excluded() // nothing before the grace
	f.b.Evaluate(ctx)
	if since := f.reg.Snapshot().Orgs.Get("acme").OverPlanSince; !since.Time().Equal(f.now) {
		t.Fatalf("over_plan_since %v, want %v", since, f.now)
	}
	f.now = f.now.Add(9 * time.Second)
	f.b.Evaluate(ctx)
	excluded()
	f.now = f.now.Add(time.Second)
	f.b.Evaluate(ctx)
	excluded("s2", "s3", "www.one.example")
	if op := f.b.OverPlan("acme"); op == nil || !op.Enforced || !op.EnforcedAt.Equal(f.now) {
		t.Fatalf("past the grace: %+v", op)
	}
	if !gate.Excluded().Has("s2", []byte("two.example")) || gate.Excluded().Has("s1", []byte("one.example")) {
		t.Fatal("Has disagrees with the set")
	}

	// Marks apply at once: s3 kept first; s1 deactivated is not counted.
	yes, no := true, false
	if _, err := f.reg.SetSiteActive(ctx, "s3", &yes); err != nil {
		t.Fatal(err)
	}
	excluded("s1", "s2")
	if _, err := f.reg.SetSiteActive(ctx, "s1", &no); err != nil {
		t.Fatal(err)
	}
	excluded("s2")

	f.apply(Change{Plan: "big", Actor: ActorOperator, Cause: "upgrade"})
	excluded()
	f.b.Evaluate(ctx)
	if !f.reg.Snapshot().Orgs.Get("acme").OverPlanSince.IsZero() || f.b.OverPlan("acme") != nil {
		t.Fatal("still over the plan after the upgrade")
	}
	if got, want := eventsOf(t, f, "plan_limits"), []string{"within→over", "over→within"}; !slices.Equal(got, want) {
		t.Fatalf("plan_limits events %v, want %v", got, want)
	}
}

// TestStorageReadOncePerPass: a pass reads every org's storage in one call,
// never once per org (which walked every counter for each org: quadratic
// in the registry), and a restarted node that has not measured storage yet
// neither lifts a block nor clears storage_over_since.
func TestStorageReadOncePerPass(t *testing.T) {
	f, storage := newComplianceFixture(t)
	ctx := context.Background()
	for i := range 50 {
		if _, err := f.reg.CreateOrg(ctx, sites.Org{ID: fmt.Sprintf("org-%d", i), Plan: "small", State: sites.StateActive}); err != nil {
			t.Fatal(err)
		}
	}
	storage.set("acme", 3000)
	f.b.Evaluate(ctx)
	f.now = f.now.Add(11 * time.Second)
	f.b.Evaluate(ctx)
	if storage.single != 0 || storage.all != 2 {
		t.Fatalf("two passes over 51 orgs: %d OrgStorage and %d StorageByOrg calls, want 0 and 2", storage.single, storage.all)
	}
	if d := f.b.Gate("acme").Decision(); d != access.BlockStorage {
		t.Fatalf("past the grace: %v", d)
	}

	// A restart: a new Billing on the same registry, storage not measured.
	storage.unmeasured = true
	cfg := Config{StorageGrace: 10 * time.Second, DowngradeGrace: 10 * time.Second}
	b, err := New(ctx, cfg, Options{Sites: f.reg, Store: f.st, Usage: f.usage, Storage: storage,
		Metrics: prometheus.NewRegistry(), Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	b.Evaluate(ctx)
	if d := b.Gate("acme").Decision(); d != access.BlockStorage {
		t.Fatalf("after a restart, before storage is measured: %v", d)
	}
	if f.reg.Snapshot().Orgs.Get("acme").StorageOverSince.IsZero() {
		t.Fatal("storage_over_since cleared before storage was measured")
	}
	storage.unmeasured = false
	storage.set("acme", 10)
	b.Evaluate(ctx)
	if d := b.Gate("acme").Decision(); d != access.Allow {
		t.Fatalf("measured under the quota: %v", d)
	}
}

// TestTrialEndMovedByOperator: the operator moves a trialing org's trial end
// (recorded as an event); an org that is not trialing is refused.
func TestTrialEndMovedByOperator(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.b.Apply(ctx, "acme", Change{TrialEndsAt: f.now.Add(time.Hour), Actor: ActorOperator, Cause: "test"}); !errors.Is(err, ErrTransition) {
		t.Fatalf("an active org's trial end moved: %v", err)
	}
	f.apply(Change{State: sites.StateTrialing, Actor: ActorOperator, Cause: "test"})
	at := f.now.Add(48 * time.Hour)
	if o := f.apply(Change{TrialEndsAt: at, Actor: ActorOperator, Cause: "extended"}); !o.TrialEndsAt.Time().Equal(at) {
		t.Fatalf("trial_ends_at %v, want %v", o.TrialEndsAt, at)
	}
	events, err := f.b.Events(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	last := events[len(events)-1]
	if last.Field != "trial_ends_at" || last.To != at.UTC().Format(time.RFC3339) || last.Cause != "extended" {
		t.Fatalf("event %+v", last)
	}
}

// blockingStorage is a StorageReader whose StorageByOrg waits for release
// (a pass over a million sites' counters).
type blockingStorage struct {
	entered, release chan struct{}
}

func (s *blockingStorage) OrgStorage(string) int64 { return 0 }

func (s *blockingStorage) StorageByOrgOf(func(string) bool) (map[string]int64, bool) {
	close(s.entered)
	<-s.release
	return map[string]int64{}, true
}

// TestEvaluateReadsStorageUnlocked: while a pass reads every org's
// storage, registry writes (which recompute their orgs' decisions under
// billing's lock) go through: the read is not made under that lock. At a
// million sites it took long enough to hold every write up.
func TestEvaluateReadsStorageUnlocked(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	slow := &blockingStorage{entered: make(chan struct{}), release: make(chan struct{})}
	b, err := New(ctx, Config{}, Options{Sites: f.reg, Store: f.st, Storage: slow, Metrics: prometheus.NewRegistry(),
		Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	b.Gate("acme") // a gate a write recomputes
	passed := make(chan struct{})
	go func() { b.Evaluate(ctx); close(passed) }()
	<-slow.entered
	wrote := make(chan error, 1)
	go func() {
		_, err := f.reg.CreateOrg(ctx, sites.Org{ID: "during", Plan: "small"})
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(slow.release)
		t.Fatal("a registry write waited for the pass's storage read")
	}
	close(slow.release)
	<-passed
}
