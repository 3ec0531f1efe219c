package billing

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// newLadderFixture is newFixture with a ladder of three plans (basic 1,
// pro 2, team 2, business 3); acme is active on pro.
func newLadderFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	for _, p := range []sites.Plan{{Name: "basic", Rank: 1}, {Name: "pro", Rank: 2}, {Name: "team", Rank: 2}, {Name: "business", Rank: 3}} {
		if _, err := f.reg.PutPlan(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	f.apply(Change{Plan: "pro", Actor: ActorOperator, Cause: "setup"})
	return f
}

// TestPlanLadder: who may move an org which way, and what is recorded.
func TestPlanLadder(t *testing.T) {
	tests := []struct {
		name    string
		pending string // a tenant downgrade scheduled first (to this plan)
		c       Change
		period  time.Duration // c.PeriodEnd: the clock plus this; 0: none
		wantErr error
		plan    string        // the org's plan after
		pendTo  string        // its pending plan after
		pendAt  time.Duration // if not 0: when it is due, from the clock
		events  []string
	}{
		{name: "operator up", c: Change{Plan: "business", Actor: ActorOperator, Cause: "admin API"},
			plan: "business", events: []string{"plan pro→business admin API"}},
		{name: "operator down refused", c: Change{Plan: "basic", Actor: ActorOperator, Cause: "admin API"},
			wantErr: ErrDowngrade, plan: "pro"},
		{name: "operator lateral refused", c: Change{Plan: "team", Actor: ActorOperator, Cause: "admin API"},
			wantErr: ErrDowngrade, plan: "pro"},
		{name: "operator down forced", c: Change{Plan: "basic", Actor: ActorOperator, Cause: "admin API", Force: true},
			plan: "basic", events: []string{"plan pro→basic admin API (forced downgrade)"}},
		{name: "tenant up at once", c: Change{Plan: "business", Actor: ActorStripe, Cause: "sub", Tenant: true}, period: time.Hour,
			plan: "business", events: []string{"plan pro→business sub"}},
		{name: "tenant down waits for the period end", c: Change{Plan: "basic", Actor: ActorStripe, Cause: "sub", Tenant: true}, period: time.Hour,
			plan: "pro", pendTo: "basic", events: []string{"pending_plan →basic sub: downgrade from pro at the end of the paid period"}},
		{name: "tenant lateral waits too", c: Change{Plan: "team", Actor: ActorStripe, Cause: "sub", Tenant: true}, period: time.Hour,
			plan: "pro", pendTo: "team", events: []string{"pending_plan →team sub"}},
		{name: "tenant down without period end: at once", c: Change{Plan: "basic", Actor: ActorStripe, Cause: "sub", Tenant: true},
			plan: "basic", events: []string{"plan pro→basic sub: downgrade applied at once (the event has no period end)"}},
		{name: "tenant down after the period end: at once", c: Change{Plan: "basic", Actor: ActorStripe, Cause: "sub", Tenant: true}, period: -time.Second,
			plan: "basic", events: []string{"plan pro→basic sub: downgrade applied at once (the paid period ended"}},
		{name: "cancellation at once", c: Change{Plan: "basic", Actor: ActorStripe, Cause: "subscription cancelled"},
			plan: "basic", events: []string{"plan pro→basic subscription cancelled"}},
		{name: "upgrade cancels the pending plan", pending: "basic",
			c: Change{Plan: "business", Actor: ActorStripe, Cause: "sub", Tenant: true}, period: time.Hour,
			plan: "business", events: []string{"pending_plan basic→ sub: superseded by the move to business", "plan pro→business sub"}},
		{name: "tenant back on its plan cancels the pending plan", pending: "basic",
			c: Change{Plan: "pro", Actor: ActorStripe, Cause: "sub", Tenant: true}, period: time.Hour,
			plan: "pro", events: []string{"pending_plan basic→ sub: plan pro kept"}},
		{name: "a new tenant downgrade replaces the pending plan", pending: "team",
			c: Change{Plan: "basic", Actor: ActorStripe, Cause: "sub", Tenant: true}, period: time.Hour,
			plan: "pro", pendTo: "basic", events: []string{"pending_plan team→basic sub"}},
		{name: "the same downgrade later is not postponed", pending: "basic",
			c: Change{Plan: "basic", Actor: ActorStripe, Cause: "sub", Tenant: true}, period: 30 * 24 * time.Hour,
			plan: "pro", pendTo: "basic", pendAt: 2 * time.Hour},
		{name: "operator forced move cancels the pending plan", pending: "team",

			c:    Change{Plan: "basic", Actor: ActorOperator, Cause: "admin API", Force: true},
			plan: "basic", events: []string{"pending_plan team→ admin API: superseded", "plan pro→basic admin API (forced downgrade)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newLadderFixture(t)
			ctx := context.Background()
			if tc.pending != "" {
				f.apply(Change{Plan: tc.pending, Actor: ActorStripe, Tenant: true, PeriodEnd: f.now.Add(2 * time.Hour), Cause: "earlier"})
			}
			before, _ := f.b.Events(ctx, "acme")
			c := tc.c
			if tc.period != 0 {
				c.PeriodEnd = f.now.Add(tc.period)
			}
			_, err := f.b.Apply(ctx, "acme", c)
			if !errors.Is(err, tc.wantErr) || (err != nil && !errors.Is(err, sites.ErrConflict)) {
				t.Fatalf("Apply: %v, want %v", err, tc.wantErr)
			}
			o := f.reg.Snapshot().Orgs.Get("acme")
			if o.Plan != tc.plan || o.PendingPlan != tc.pendTo {
				t.Fatalf("plan %q pending %q, want %q pending %q", o.Plan, o.PendingPlan, tc.plan, tc.pendTo)
			}
			if tc.pendTo != "" && o.PendingPlanAt.IsZero() {
				t.Fatal("pending plan without a time")
			}
			if tc.pendAt != 0 && !o.PendingPlanAt.Time().Equal(f.now.Add(tc.pendAt)) {
				t.Fatalf("pending plan at %s, want %s", o.PendingPlanAt, f.now.Add(tc.pendAt))
			}
			after, _ := f.b.Events(ctx, "acme")
			got := after[len(before):]
			if len(got) != len(tc.events) {
				t.Fatalf("events %+v, want %q", got, tc.events)
			}
			for i, e := range got {
				s := e.Field + " " + e.From + "→" + e.To + " " + e.Cause
				if !strings.HasPrefix(s, tc.events[i]) || e.Actor != c.Actor {
					t.Errorf("event %d: %q by %s, want %q by %s", i, s, e.Actor, tc.events[i], c.Actor)
				}
			}
		})
	}
}

// TestPendingPlanDue: a tenant downgrade applies in the first evaluation
// at or after its time, actor billing, and only once.
func TestPendingPlanDue(t *testing.T) {
	f := newLadderFixture(t)
	ctx := context.Background()
	periodEnd := f.now.Add(30 * time.Second)
	f.apply(Change{Plan: "basic", Actor: ActorStripe, Cause: "sub", Tenant: true, PeriodEnd: periodEnd, StripeEventAt: f.now})
	for _, tc := range []struct {
		at   time.Time
		plan string
	}{
		{f.now, "pro"},
		{periodEnd.Add(-time.Second), "pro"},
		{periodEnd, "basic"},
		{periodEnd.Add(time.Second), "basic"},
	} {
		f.now = tc.at
		f.b.Evaluate(ctx)
		if o := f.reg.Snapshot().Orgs.Get("acme"); o.Plan != tc.plan {
			t.Fatalf("at %s: plan %q, want %q", tc.at, o.Plan, tc.plan)
		}
	}
	o := f.reg.Snapshot().Orgs.Get("acme")
	if o.PendingPlan != "" || !o.PendingPlanAt.IsZero() {
		t.Fatalf("pending plan left: %+v", o)
	}
	evs, _ := f.b.Events(ctx, "acme")
	var applied []Event
	for _, e := range evs {
		if e.Actor == ActorBilling {
			applied = append(applied, e)
		}
	}
	if len(applied) != 2 || applied[0].Field != "plan" || applied[0].To != "basic" || applied[1].Field != "pending_plan" || applied[1].To != "" {
		t.Fatalf("events of the due downgrade: %+v", applied)
	}
}

// TestLadderConfig: the plan ladder's and trials' keys are checked.
func TestLadderConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // parts of the error; none: valid
	}{
		{name: "ranks and trials", cfg: Config{Plans: []PlanConfig{{Name: "a", Rank: 1, TrialDays: 14}, {Name: "b", Rank: 2}}, TrialEndingNotice: time.Second}},
		{name: "negative rank", cfg: Config{Plans: []PlanConfig{{Name: "a", Rank: -1}}}, want: []string{"billing.plans[0]: rank: must not be negative"}},
		{name: "bad trial days", cfg: Config{Plans: []PlanConfig{{Name: "a", TrialDays: -1}, {Name: "b", TrialDays: 4000}}},
			want: []string{"billing.plans[0]: trial_days: must not be negative", "billing.plans[1]: trial_days: 4000 is more than ten years"}},
		{name: "negative notice", cfg: Config{TrialEndingNotice: -time.Hour}, want: []string{"billing.trial_ending_notice: must not be negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Defaults()
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\ndoes not say %q", err, w)
				}
			}
		})
	}
	var c Config
	c.Defaults()
	if c.TrialEndingNotice != 72*time.Hour {
		t.Fatalf("trial_ending_notice default %s", c.TrialEndingNotice)
	}
}
