package billing_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/hooks"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// hookSink is a loopback receiver of hook deliveries.
type hookSink struct {
	mu  sync.Mutex
	got map[string][]string // type → ids delivered
}

func (s *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var e billing.HookEvent
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &e); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.got[e.Type] = append(s.got[e.Type], e.ID)
	s.mu.Unlock()
}

func (s *hookSink) ids(typ string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got[typ]...)
}

type trialEnv struct {
	reg   *sites.Registry
	b     *billing.Billing
	clock *clocktest.Clock
	sink  *hookSink
}

// newTrialEnv is a registry and Billing on a real bbolt store, with plans
// free (the default), trial (14 days, rank 2) and pro (rank 3), hooks
// delivered to a loopback receiver by the real outbox, and a fake clock.
func newTrialEnv(t *testing.T) *trialEnv {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	env := &trialEnv{reg: reg, clock: clocktest.New(time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)), sink: &hookSink{got: map[string][]string{}}}
	srv := httptest.NewServer(env.sink)
	t.Cleanup(srv.Close)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	h, err := hooks.New([]billing.HookConfig{{URL: srv.URL, Secret: "0123456789abcdef-trial"}},
		hooks.Options{Store: st, Metrics: prometheus.NewRegistry(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); h.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = h.Close() })
	env.b, err = billing.New(ctx, billing.Config{TrialEndingNotice: 48 * time.Hour, Plans: []billing.PlanConfig{
		{Name: "trial", Rank: 2, TrialDays: 14}, {Name: "pro", Rank: 3}}},
		billing.Options{Sites: reg, Store: st, Hooks: h, Metrics: prometheus.NewRegistry(), Logger: log, Now: env.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// waitHooks polls until typ was delivered want times, then checks that no
// more arrive than that.
func (e *trialEnv) waitHooks(t *testing.T, typ string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.sink.ids(typ)) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s delivered %d times, want %d", typ, len(e.sink.ids(typ)), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.sink.ids(typ); len(got) != want {
		t.Fatalf("%s delivered %d times (%v), want %d", typ, len(got), got, want)
	}
}

// TestTrialEnds walks a trial to its end: trial.ending in the notice
// window, trial.ended at the end, each once over many evaluations; an
// unpaid org moves to the default plan, a paid one keeps its plan.
func TestTrialEnds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		paid      bool // an invoice was paid during the trial
		plan      string
		wantCause string
	}{
		{name: "unpaid: default plan", plan: "free", wantCause: "trial ended"},
		{name: "paid: keeps its plan", paid: true, plan: "trial"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTrialEnv(t)
			ctx := context.Background()
			o, err := env.b.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "trial"})
			if err != nil {
				t.Fatal(err)
			}
			ends := env.clock.Now().Add(14 * 24 * time.Hour)
			if o.State != sites.StateTrialing || !o.TrialEndsAt.Time().Equal(ends) {
				t.Fatalf("created %+v, want trialing until %s", o, ends)
			}
			if tc.paid {
				if _, err := env.b.Apply(ctx, "acme", billing.Change{State: sites.StateActive, Actor: billing.ActorStripe,
					Cause: "invoice paid", StripeEventAt: env.clock.Now()}); err != nil {
					t.Fatal(err)
				}
			}
			// Before the notice, in it (twice), at the end (twice), after.
			for _, at := range []time.Duration{-49 * time.Hour, -47 * time.Hour, -time.Second, 0, time.Second, time.Hour} {
				env.clock.Set(ends.Add(at))
				env.b.Evaluate(ctx)
				if at == -49*time.Hour && len(env.sink.ids("trial.ending")) != 0 {
					t.Fatal("trial.ending before the notice")
				}
			}
			env.waitHooks(t, "trial.ending", 1)
			env.waitHooks(t, "trial.ended", 1)
			o = *env.reg.Snapshot().Orgs.Get("acme")
			if o.Plan != tc.plan || o.State != sites.StateActive || !o.TrialEndsAt.IsZero() {
				t.Fatalf("after the trial: %+v, want plan %s, active, no trial", o, tc.plan)
			}
			evs, err := env.b.Events(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			last := evs[len(evs)-1]
			if last.Field != "trial_ends_at" || last.To != "" || last.Actor != billing.ActorBilling {
				t.Fatalf("last event %+v", last)
			}
			if tc.wantCause != "" {
				var moved bool
				for _, e := range evs {
					moved = moved || (e.Field == "plan" && e.To == "free" && e.Cause == tc.wantCause && e.Actor == billing.ActorBilling)
				}
				if !moved {
					t.Fatalf("no plan event to free by billing: %+v", evs)
				}
			}
		})
	}
}

// TestTrialStarts: which creations and operator moves start a trial.
func TestTrialStarts(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		org       sites.Org
		move      *billing.Change // an operator change after creation
		state     string
		trialDays int // 0: no trial
	}{
		{name: "created on a trial plan", org: sites.Org{ID: "a", Plan: "trial"}, state: "trialing", trialDays: 14},
		{name: "created trialing", org: sites.Org{ID: "a", Plan: "trial", State: "trialing"}, state: "trialing", trialDays: 14},
		{name: "created active: no trial", org: sites.Org{ID: "a", Plan: "trial", State: "active"}, state: "active"},
		{name: "created suspended: no trial", org: sites.Org{ID: "a", Plan: "trial", State: "suspended"}, state: "suspended"},
		{name: "created with a Stripe customer: no trial", org: sites.Org{ID: "a", Plan: "trial", StripeCustomer: "cus_a"}, state: "active"},
		{name: "created on a plan without trial", org: sites.Org{ID: "a", Plan: "free"}, state: "active"},
		{name: "moved by the operator", org: sites.Org{ID: "a", Plan: "free"},
			move: &billing.Change{Plan: "trial", Actor: billing.ActorOperator, Cause: "admin API"}, state: "trialing", trialDays: 14},
		{name: "moved with an explicit state: no trial", org: sites.Org{ID: "a", Plan: "free"},
			move: &billing.Change{Plan: "trial", State: "active", Actor: billing.ActorOperator, Cause: "admin API"}, state: "active"},
		{name: "moved by Stripe: no trial", org: sites.Org{ID: "a", Plan: "free", StripeCustomer: "cus_a"},
			move: &billing.Change{Plan: "trial", Actor: billing.ActorStripe, Tenant: true, Cause: "sub"}, state: "active"},
		{name: "moved while past due: no trial", org: sites.Org{ID: "a", Plan: "free", State: "past_due"},
			move: &billing.Change{Plan: "trial", Actor: billing.ActorOperator, Cause: "admin API"}, state: "past_due"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTrialEnv(t)
			o, err := env.b.CreateOrg(ctx, tc.org)
			if err != nil {
				t.Fatal(err)
			}
			if tc.move != nil {
				env.clock.Add(time.Hour)
				if o, err = env.b.Apply(ctx, "a", *tc.move); err != nil {
					t.Fatal(err)
				}
			}
			want := time.Time{}
			if tc.trialDays > 0 {
				want = env.clock.Now().Add(time.Duration(tc.trialDays) * 24 * time.Hour)
			}
			if o.State != tc.state || !o.TrialEndsAt.Time().Equal(want) {
				t.Fatalf("org %s, trial ends %v; want %s, %v", o.State, o.TrialEndsAt, tc.state, want)
			}
			evs, _ := env.b.Events(ctx, "a")
			if evs[0].Field != "plan" || evs[0].To != tc.org.Plan || evs[0].Cause != "org created" {
				t.Fatalf("first event %+v", evs[0])
			}
			if tc.trialDays > 0 && evs[len(evs)-1].Field != "trial_ends_at" {
				t.Fatalf("trial not recorded: %+v", evs)
			}
		})
	}
}
