package stripe

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stripe/stripe-go/v76/webhook"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// ladderFixture is the webhook in front of a real Billing and registry on
// bbolt, with plans basic (rank 1), pro (2) and business (3), org acme on
// pro linked to cus_acme, and a fake clock for Billing.
type ladderFixture struct {
	*stripeFixture
	reg   *sites.Registry
	bill  *billing.Billing
	clock *clocktest.Clock
}

func newLadderFixture(t *testing.T) *ladderFixture {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	clock := clocktest.New(time.Now().Truncate(time.Second))
	bill, err := billing.New(ctx, billing.Config{Plans: []billing.PlanConfig{
		{Name: "basic", Rank: 1}, {Name: "pro", Rank: 2}, {Name: "business", Rank: 3}}},
		billing.Options{Sites: reg, Store: st, Metrics: prometheus.NewRegistry(), Now: clock.Now,
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bill.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "pro", StripeCustomer: "cus_acme"}); err != nil {
		t.Fatal(err)
	}
	f := &stripeFixture{st: st}
	f.s = newTestStripe(t, billing.StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
		Options{Accounts: bill, Store: st})
	f.srv = httptest.NewServer(f.s)
	t.Cleanup(f.srv.Close)
	return &ladderFixture{stripeFixture: f, reg: reg, bill: bill, clock: clock}
}

// periodSubscription is a subscription to plan's price with its paid
// period; prevEnd, if not 0, is previous_attributes.current_period_end
// (the event is the period's renewal).
type periodSubscription struct {
	plan       string
	start, end time.Time // zero: left out
	prevEnd    time.Time
}

// deliver sends the subscription as customer.subscription.updated.
func (f *ladderFixture) deliverSub(t *testing.T, id string, created time.Time, s periodSubscription) string {
	t.Helper()
	obj := fmt.Sprintf(`{"id":"sub_1","object":"subscription","customer":"cus_acme","status":"active","metadata":{},%s"items":{"object":"list","data":[{"id":"si_1","object":"subscription_item","price":%s}]}}`,
		periodFields(s.start, s.end), price("price_"+s.plan, s.plan, ""))
	prev := ""
	if !s.prevEnd.IsZero() {
		prev = fmt.Sprintf(`,"previous_attributes":{"current_period_end":%d}`, s.prevEnd.Unix())
	}
	body := fmt.Appendf(nil, `{"id":%q,"object":"event","api_version":"2024-06-20","created":%d,"livemode":false,"type":"customer.subscription.updated","data":{"object":%s%s}}`,
		id, created.Unix(), obj, prev)
	signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: stripeTestSecret, Timestamp: time.Now()})
	code, _, b := f.post(t, signed.Payload, signed.Header)
	if code != 200 {
		t.Fatalf("%s: %d %s", id, code, b)
	}
	var out struct{ Outcome string }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out.Outcome
}

func periodFields(start, end time.Time) string {
	s := ""
	if !start.IsZero() {
		s += fmt.Sprintf(`"current_period_start":%d,`, start.Unix())
	}
	if !end.IsZero() {
		s += fmt.Sprintf(`"current_period_end":%d,`, end.Unix())
	}
	return s
}

func (f *ladderFixture) org() sites.Org { return *f.reg.Snapshot().Orgs.Get("acme") }

// TestStripeLadder: a tenant's subscription change to a higher-ranked plan
// applies at once; to a lower-ranked one it is pending until the period
// end, where the periodic pass applies it; a renewal or an event without
// a period applies at once.
func TestStripeLadder(t *testing.T) {
	for _, tc := range []struct {
		name        string
		sub         func(now time.Time) periodSubscription
		plan        string // right after the event
		pending     string
		planAtEnd   string // after an evaluation at the period end (+30s)
		wantOutcome string
	}{
		{name: "up at once", sub: func(now time.Time) periodSubscription {
			return periodSubscription{plan: "business", start: now.Add(-time.Hour), end: now.Add(30 * time.Second)}
		}, plan: "business", planAtEnd: "business"},
		{name: "down at the period end", sub: func(now time.Time) periodSubscription {
			return periodSubscription{plan: "basic", start: now.Add(-time.Hour), end: now.Add(30 * time.Second)}
		}, plan: "pro", pending: "basic", planAtEnd: "basic"},
		{name: "down at a renewal: at once", sub: func(now time.Time) periodSubscription {
			return periodSubscription{plan: "basic", start: now, end: now.Add(30 * 24 * time.Hour), prevEnd: now}
		}, plan: "basic", planAtEnd: "basic"},
		{name: "down without a period: at once", sub: func(time.Time) periodSubscription {
			return periodSubscription{plan: "basic"}
		}, plan: "basic", planAtEnd: "basic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newLadderFixture(t)
			now := f.clock.Now()
			if out := f.deliverSub(t, "evt_1", now, tc.sub(now)); out != "applied" {
				t.Fatalf("outcome %q", out)
			}
			if o := f.org(); o.Plan != tc.plan || o.PendingPlan != tc.pending {
				t.Fatalf("after the event: plan %q pending %q, want %q pending %q", o.Plan, o.PendingPlan, tc.plan, tc.pending)
			}
			f.clock.Add(29 * time.Second)
			f.bill.Evaluate(context.Background())
			if o := f.org(); o.Plan != tc.plan {
				t.Fatalf("before the period end: plan %q", o.Plan)
			}
			f.clock.Add(time.Second)
			f.bill.Evaluate(context.Background())
			if o := f.org(); o.Plan != tc.planAtEnd || o.PendingPlan != "" {
				t.Fatalf("at the period end: plan %q pending %q, want %q", o.Plan, o.PendingPlan, tc.planAtEnd)
			}
		})
	}
}

// TestStripeLadderOutOfOrder: Stripe's redeliveries and reordering keep
// working with pending plans: an older event is stale (it neither applies
// nor cancels the pending plan), a redelivery is a duplicate, and a newer
// upgrade cancels the pending plan.
func TestStripeLadderOutOfOrder(t *testing.T) {
	f := newLadderFixture(t)
	now := f.clock.Now()
	t0 := now.Add(-time.Hour)
	end := now.Add(time.Hour)
	steps := []struct {
		id      string
		created time.Time
		plan    string
		outcome string
		wantPln string
		pending string
	}{
		{"evt_down", t0.Add(2 * time.Minute), "basic", "applied", "pro", "basic"},
		{"evt_up_old", t0.Add(time.Minute), "business", "stale", "pro", "basic"},
		{"evt_down", t0.Add(2 * time.Minute), "basic", "duplicate", "pro", "basic"},
		{"evt_same_second", t0.Add(2 * time.Minute), "basic", "applied", "pro", "basic"},
		{"evt_up", t0.Add(3 * time.Minute), "business", "applied", "business", ""},
		{"evt_down", t0.Add(2 * time.Minute), "basic", "duplicate", "business", ""},
	}
	for _, s := range steps {
		out := f.deliverSub(t, s.id, s.created, periodSubscription{plan: s.plan, start: t0, end: end})
		o := f.org()
		if out != s.outcome || o.Plan != s.wantPln || o.PendingPlan != s.pending {
			t.Fatalf("%s: outcome %q plan %q pending %q; want %q %q %q", s.id, out, o.Plan, o.PendingPlan, s.outcome, s.wantPln, s.pending)
		}
	}
	evs, err := f.bill.Events(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	var pendingEvents int
	for _, e := range evs {
		if e.Field == "pending_plan" {
			pendingEvents++
			if e.Actor != billing.ActorStripe || e.Ref == "" {
				t.Errorf("pending plan event without actor or ref: %+v", e)
			}
		}
	}
	if pendingEvents != 2 { // scheduled once (the same-second event changes nothing), cancelled once
		t.Fatalf("%d pending_plan events, want 2: %+v", pendingEvents, evs)
	}
}
