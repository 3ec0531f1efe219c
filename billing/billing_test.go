package billing

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
	"golang.org/x/time/rate"
)

// fakeUsage is a meter.Reader with set period totals.
type fakeUsage struct {
	mu     sync.Mutex
	egress map[string]int64
	err    error
}

func (f *fakeUsage) set(org string, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.egress[org] = n
}

func (f *fakeUsage) Hourly(context.Context, string, time.Time, time.Time) ([]meter.Point, error) {
	return nil, nil
}

func (f *fakeUsage) PeriodTotals(_ context.Context, _, after string, _ int) ([]meter.OrgTotal, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, "", f.err
	}
	var out []meter.OrgTotal
	for org, n := range f.egress {
		out = append(out, meter.OrgTotal{Org: org, Values: meter.Values{EgressBytes: n}})
	}
	return out, "", nil
}

// recorder is an Emitter that keeps what it was given.
type recorder struct {
	mu     sync.Mutex
	events []HookEvent
}

func (r *recorder) Emit(_ context.Context, e HookEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) count(typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

type fixture struct {
	t     *testing.T
	st    *store.Bolt
	reg   *sites.Registry
	usage *fakeUsage
	hooks *recorder
	now   time.Time
	b     *Billing
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, st: st, reg: reg, usage: &fakeUsage{egress: map[string]int64{}}, hooks: &recorder{},
		now: time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)}
	cfg := Config{Plans: []PlanConfig{
		{Name: "small", EgressBytes: 1000, ThrottleBPS: 100, HardLimitPercent: 150, GracePeriod: 72 * time.Hour, Rank: 1},
		{Name: "big", EgressBytes: 1_000_000, Rank: 2},
	}}
	f.start(cfg)
	if _, err := reg.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "small", State: sites.StateActive}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) start(cfg Config) {
	f.t.Helper()
	b, err := New(context.Background(), cfg, Options{Sites: f.reg, Store: f.st, Usage: f.usage, Hooks: f.hooks,
		Metrics: prometheus.NewRegistry(), Now: func() time.Time { return f.now }})
	if err != nil {
		f.t.Fatal(err)
	}
	f.b = b
}

func (f *fixture) apply(c Change) sites.Org {
	f.t.Helper()
	o, err := f.b.Apply(context.Background(), "acme", c)
	if err != nil {
		f.t.Fatalf("%+v: %v", c, err)
	}
	return o
}

// TestScriptedMonth walks one org through a month with a fake clock: quota
// warning, throttle, block, upgrade, payment failure, grace, expiry,
// payment, restoration; every hook once.
func TestScriptedMonth(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	gate := f.b.Gate("acme")
	step := func(egress int64, want access.Decision) {
		t.Helper()
		f.usage.set("acme", egress)
		f.b.Evaluate(ctx)
		if got := gate.Decision(); got != want {
			t.Fatalf("at %d bytes: %v, want %v", egress, got, want)
		}
	}
	step(100, access.Allow)
	step(800, access.Allow)
	if f.hooks.count("quota.warning") != 1 {
		t.Fatalf("no quota.warning at 80 %%: %+v", f.hooks.events)
	}
	step(1000, access.Throttle)
	if l := gate.Limiter(); l == nil || l.Limit() != rate.Limit(100) {
		t.Fatalf("throttle limiter %v", l)
	}
	if f.hooks.count("quota.exceeded") != 1 || f.hooks.count("org.throttled") != 1 {
		t.Fatalf("hooks at 100 %%: %+v", f.hooks.events)
	}
	step(1499, access.Throttle)
	step(1500, access.BlockQuota)
	if f.hooks.count("org.blocked") != 1 {
		t.Fatalf("no org.blocked: %+v", f.hooks.events)
	}

	// An upgrade (a subscription event) unblocks at once, before the next
	// evaluation; org.restored follows at the evaluation.
	f.apply(Change{Plan: "big", Actor: ActorStripe, Cause: "customer.subscription.updated", StripeEventAt: f.now})
	if gate.Decision() != access.Allow {
		t.Fatalf("after the upgrade: %v", gate.Decision())
	}
	step(1500, access.Allow)
	if f.hooks.count("org.restored") != 1 {
		t.Fatalf("no org.restored after the upgrade: %+v", f.hooks.events)
	}

	// Payment failure → grace (served) → grace.ending → expiry (402).
	f.now = f.now.Add(24 * time.Hour)
	o := f.apply(Change{State: sites.StatePastDue, Actor: ActorStripe, Cause: "payment failed", StripeEventAt: f.now})
	if !o.GraceEndsAt.Time().Equal(f.now) { // plan big has no grace period
		t.Fatalf("grace ends %v, want %v", o.GraceEndsAt, f.now)
	}
	if f.hooks.count("payment.failed") != 1 || f.hooks.count("grace.started") != 1 {
		t.Fatalf("payment failure hooks: %+v", f.hooks.events)
	}
	// Back to the small plan's 72h grace for the rest of the script.
	f.apply(Change{Plan: "small", Actor: ActorOperator, Cause: "test", Force: true})
	f.apply(Change{State: sites.StateActive, Actor: ActorOperator, Cause: "test"})
	o = f.apply(Change{State: sites.StatePastDue, Actor: ActorStripe, Cause: "payment failed", StripeEventAt: f.now})
	if want := f.now.Add(72 * time.Hour); !o.GraceEndsAt.Time().Equal(want) {
		t.Fatalf("grace ends %v, want %v", o.GraceEndsAt, want)
	}
	f.usage.set("acme", 0)
	step(0, access.Allow) // served during the grace period
	f.now = f.now.Add(49 * time.Hour)
	step(0, access.Allow)
	if f.hooks.count("grace.ending") != 1 {
		t.Fatalf("no grace.ending 23h before expiry: %+v", f.hooks.events)
	}
	f.now = f.now.Add(23 * time.Hour)
	f.b.Evaluate(ctx) // expires the org
	if gate.Decision() != access.BlockExpired || f.reg.Snapshot().Orgs.Get("acme").State != sites.StateExpired {
		t.Fatalf("after the grace period: %v, state %s", gate.Decision(), f.reg.Snapshot().Orgs.Get("acme").State)
	}
	if f.hooks.count("org.expired") != 1 {
		t.Fatalf("no org.expired: %+v", f.hooks.events)
	}

	// Payment restores at once.
	f.apply(Change{State: sites.StateActive, Actor: ActorStripe, Cause: "invoice.paid", StripeEventAt: f.now})
	if gate.Decision() != access.Allow {
		t.Fatalf("after payment: %v", gate.Decision())
	}
	// Restored three times: the upgrade, the operator's reset above, the payment.
	if f.hooks.count("payment.succeeded") != 1 || f.hooks.count("org.restored") != 3 {
		t.Fatalf("payment hooks: %+v", f.hooks.events)
	}

	// Once-per-period hooks stay once, across evaluations and a restart.
	f.usage.set("acme", 1500)
	for range 3 {
		f.b.Evaluate(ctx)
	}
	f.start(Config{})
	f.b.Evaluate(ctx)
	for typ, want := range map[string]int{"quota.warning": 1, "quota.exceeded": 1, "org.throttled": 1, "org.blocked": 1, "grace.ending": 1} {
		if got := f.hooks.count(typ); got != want {
			t.Errorf("%s fired %d times, want %d", typ, got, want)
		}
	}

	// The history has every change, with cause and actor.
	evs, err := f.b.Events(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, e := range evs {
		if e.Field == "state" {
			states = append(states, e.From+">"+e.To+"/"+e.Actor)
		}
	}
	want := []string{"active>past_due/stripe", "past_due>active/operator", "active>past_due/stripe", "past_due>expired/billing", "expired>active/stripe"}
	if len(states) != len(want) {
		t.Fatalf("state history %v, want %v", states, want)
	}
	for i := range want {
		if states[i] != want[i] {
			t.Fatalf("state history %v, want %v", states, want)
		}
	}
}

func TestLifecycleRules(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// Stripe may not make an active org expired directly.
	if _, err := f.b.Apply(ctx, "acme", Change{State: sites.StateExpired, Actor: ActorStripe, StripeEventAt: f.now}); !errors.Is(err, ErrTransition) {
		t.Fatalf("active → expired by Stripe: %v", err)
	}
	// Older Stripe events change nothing.
	f.apply(Change{Plan: "big", Actor: ActorStripe, StripeEventAt: f.now})
	if _, err := f.b.Apply(ctx, "acme", Change{Plan: "small", Actor: ActorStripe, StripeEventAt: f.now.Add(-time.Minute)}); !errors.Is(err, ErrStale) {
		t.Fatalf("older event: %v", err)
	}
	if f.reg.Snapshot().Orgs.Get("acme").Plan != "big" {
		t.Fatal("a stale event changed the plan")
	}
	// Suspension: Stripe cannot lift it, the operator can.
	f.apply(Change{State: sites.StateSuspended, Actor: ActorOperator, Cause: "abuse"})
	if f.b.Gate("acme").Decision() != access.BlockSuspended {
		t.Fatal("suspended org not blocked")
	}
	f.apply(Change{State: sites.StateActive, Plan: "small", Actor: ActorStripe, Cause: "invoice.paid", StripeEventAt: f.now.Add(time.Minute)})
	if o := f.reg.Snapshot().Orgs.Get("acme"); o.State != sites.StateSuspended || o.Plan != "small" {
		t.Fatalf("Stripe during suspension: state %s plan %s", o.State, o.Plan)
	}
	f.apply(Change{State: sites.StateActive, Actor: ActorOperator, Cause: "resolved"})
	if f.b.Gate("acme").Decision() != access.Allow {
		t.Fatal("operator did not lift the suspension")
	}
	// Unknown plans and states are refused.
	if _, err := f.b.Apply(ctx, "acme", Change{Plan: "nope", Actor: ActorOperator}); !errors.Is(err, sites.ErrInvalid) {
		t.Fatalf("unknown plan: %v", err)
	}
	if _, err := f.b.Apply(ctx, "acme", Change{State: "bogus", Actor: ActorOperator}); !errors.Is(err, sites.ErrInvalid) {
		t.Fatalf("unknown state: %v", err)
	}
	if _, err := f.b.Apply(ctx, "nobody", Change{State: sites.StateActive, Actor: ActorOperator}); !errors.Is(err, sites.ErrNotFound) {
		t.Fatalf("unknown org: %v", err)
	}
}

// TestUsageUnreadableKeepsDecisions: when usage cannot be read (Redis
// down), decisions stay as they were: fail open for serving, no unblocking
// either.
func TestUsageUnreadableKeepsDecisions(t *testing.T) {
	f := newFixture(t)
	f.usage.set("acme", 1500)
	f.b.Evaluate(context.Background())
	f.usage.err = errors.New("redis down")
	f.b.Evaluate(context.Background())
	if got := f.b.Gate("acme").Decision(); got != access.BlockQuota {
		t.Fatalf("decision after a failed read: %v", got)
	}
}

// TestCreateOrgOneWrite: an org and its first account events are one
// registry write (one commit: half the fsyncs of a create, and no org
// without its history).
func TestCreateOrgOneWrite(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	before := f.reg.Snapshot().Version
	if _, err := f.b.CreateOrg(ctx, sites.Org{ID: "fresh", Plan: "big"}); err != nil {
		t.Fatal(err)
	}
	if after := f.reg.Snapshot().Version; after != before+1 {
		t.Fatalf("creating an org published %d snapshots, want 1", after-before)
	}
	events, err := f.b.Events(ctx, "fresh")
	if err != nil || len(events) != 2 || events[0].Field != "plan" || events[0].To != "big" || events[1].Field != "state" {
		t.Fatalf("events %+v (%v); want plan and state", events, err)
	}
}
