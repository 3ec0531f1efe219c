package stripe

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
)

func TestStripeWebhookMapping(t *testing.T) {
	pro := price("price_pro", "pro", "")
	type want struct {
		org                     string
		state, plan, customer   string
		cause                   string
		noChange                bool
		status                  int
		outcome, detailContains string
	}
	tests := []struct {
		name   string
		setup  func(a *stripeAccounts)
		typ    string
		object string
		want   want
	}{
		{name: "checkout links the customer", typ: "checkout.session.completed",
			object: `{"id":"cs_1","object":"checkout.session","client_reference_id":"beta","customer":"cus_beta","mode":"subscription"}`,
			want:   want{org: "beta", customer: "cus_beta", cause: "checkout completed", status: 200, outcome: "applied"}},
		{name: "checkout with an expanded customer", typ: "checkout.session.completed",
			object: `{"id":"cs_1","object":"checkout.session","client_reference_id":"beta","customer":{"id":"cus_beta","object":"customer"}}`,
			want:   want{org: "beta", customer: "cus_beta", cause: "checkout completed", status: 200, outcome: "applied"}},
		{name: "checkout for an unknown org", typ: "checkout.session.completed",
			object: `{"id":"cs_1","object":"checkout.session","client_reference_id":"nope","customer":"cus_x"}`,
			want:   want{noChange: true, status: 422, outcome: "unknown_org", detailContains: `"nope"`}},
		{name: "checkout without client_reference_id", typ: "checkout.session.completed",
			object: `{"id":"cs_1","object":"checkout.session","client_reference_id":null,"customer":"cus_x"}`,
			want:   want{noChange: true, status: 200, outcome: "ignored"}},
		{name: "subscription created, plan from lookup_key", typ: "customer.subscription.created",
			object: subscriptionObject("cus_acme", "active", pro, ""),
			want:   want{org: "acme", state: "active", plan: "pro", cause: "subscription created (active)", status: 200, outcome: "applied"}},
		{name: "subscription updated, plan from price metadata", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_acme", "active", price("price_team", "", "team"), ""),
			want:   want{org: "acme", state: "active", plan: "team", cause: "subscription updated (active)", status: 200, outcome: "applied"}},
		{name: "subscription of an unlinked customer, org from metadata", typ: "customer.subscription.created",
			object: subscriptionObject("cus_beta", "active", pro, `{"tollgate_org":"beta"}`),
			want:   want{org: "beta", state: "active", plan: "pro", customer: "cus_beta", cause: "subscription created (active)", status: 200, outcome: "applied"}},
		{name: "trial for an active org: plan applies, state stays", typ: "customer.subscription.created",
			object: subscriptionObject("cus_acme", "trialing", pro, ""),
			want:   want{org: "acme", plan: "pro", cause: "subscription created (trialing)", status: 200, outcome: "applied"}},
		{name: "trial for a trialing org", typ: "customer.subscription.updated",
			setup:  func(a *stripeAccounts) { a.orgs["acme"].State = sites.StateTrialing },
			object: subscriptionObject("cus_acme", "trialing", pro, ""),
			want:   want{org: "acme", state: "trialing", plan: "pro", cause: "subscription updated (trialing)", status: 200, outcome: "applied"}},
		{name: "subscription past_due", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_acme", "past_due", pro, ""),
			want:   want{org: "acme", state: "past_due", plan: "pro", cause: "subscription updated (past_due)", status: 200, outcome: "applied"}},
		{name: "subscription unpaid is past_due", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_acme", "unpaid", pro, ""),
			want:   want{org: "acme", state: "past_due", plan: "pro", cause: "subscription updated (unpaid)", status: 200, outcome: "applied"}},
		{name: "subscription canceled is a cancellation", typ: "customer.subscription.updated",
			setup:  func(a *stripeAccounts) { a.orgs["acme"].Plan, a.orgs["acme"].State = "pro", sites.StatePastDue },
			object: subscriptionObject("cus_acme", "canceled", pro, ""),
			want:   want{org: "acme", state: "active", plan: "free", cause: "subscription cancelled", status: 200, outcome: "applied"}},
		{name: "subscription incomplete_expired is a cancellation", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_acme", "incomplete_expired", pro, ""),
			want:   want{org: "acme", state: "active", plan: "free", cause: "subscription cancelled", status: 200, outcome: "applied"}},
		{name: "subscription incomplete changes nothing", typ: "customer.subscription.created",
			object: subscriptionObject("cus_acme", "incomplete", pro, ""),
			want:   want{noChange: true, status: 200, outcome: "ignored"}},
		{name: "unknown price", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_acme", "active", price("price_platinum", "platinum", ""), ""),
			want:   want{noChange: true, status: 422, outcome: "unknown_plan", detailContains: "price_platinum"}},
		{name: "price naming no plan", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_acme", "active", price("price_bare", "", ""), ""),
			want:   want{noChange: true, status: 422, outcome: "unknown_plan", detailContains: "price_bare"}},
		{name: "subscription without price", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_acme", "active", "", ""),
			want:   want{noChange: true, status: 422, outcome: "unknown_plan", detailContains: "sub_1"}},
		{name: "subscription of an unknown customer", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_nobody", "active", pro, ""),
			want:   want{noChange: true, status: 422, outcome: "unknown_org", detailContains: "cus_nobody"}},
		{name: "subscription naming an unknown org", typ: "customer.subscription.updated",
			object: subscriptionObject("cus_nobody", "active", pro, `{"tollgate_org":"nope"}`),
			want:   want{noChange: true, status: 422, outcome: "unknown_org", detailContains: "nope"}},
		{name: "subscription deleted", typ: "customer.subscription.deleted",
			setup:  func(a *stripeAccounts) { a.orgs["acme"].Plan, a.orgs["acme"].State = "pro", sites.StatePastDue },
			object: subscriptionObject("cus_acme", "canceled", pro, ""),
			want:   want{org: "acme", state: "active", plan: "free", cause: "subscription cancelled", status: 200, outcome: "applied"}},
		{name: "invoice paid", typ: "invoice.paid",
			setup:  func(a *stripeAccounts) { a.orgs["acme"].State = sites.StatePastDue },
			object: `{"id":"in_1","object":"invoice","customer":"cus_acme"}`,
			want:   want{org: "acme", state: "active", cause: "invoice paid", status: 200, outcome: "applied"}},
		{name: "invoice payment failed", typ: "invoice.payment_failed",
			object: `{"id":"in_1","object":"invoice","customer":"cus_acme"}`,
			want:   want{org: "acme", state: "past_due", cause: "payment failed", status: 200, outcome: "applied"}},
		{name: "payment failed for an expired org is refused", typ: "invoice.payment_failed",
			setup:  func(a *stripeAccounts) { a.orgs["acme"].State = sites.StateExpired },
			object: `{"id":"in_1","object":"invoice","customer":"cus_acme"}`,
			want:   want{noChange: true, status: 200, outcome: "ignored"}},
		{name: "invoice of an unknown customer", typ: "invoice.paid",
			object: `{"id":"in_1","object":"invoice","customer":"cus_nobody"}`,
			want:   want{noChange: true, status: 422, outcome: "unknown_org", detailContains: "cus_nobody"}},
		{name: "invoice without customer", typ: "invoice.paid",
			object: `{"id":"in_1","object":"invoice","customer":null}`,
			want:   want{noChange: true, status: 422, outcome: "unknown_org"}},
		{name: "other event types are ignored", typ: "charge.succeeded",
			object: `{"id":"ch_1","object":"charge","customer":"cus_acme"}`,
			want:   want{noChange: true, status: 200, outcome: "ignored"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newStripeFixture(t)
			if tc.setup != nil {
				tc.setup(f.acc)
			}
			created := time.Now().Add(-time.Minute).Truncate(time.Second)
			code, got := f.deliver(t, "evt_1", tc.typ, created, tc.object)
			if code != tc.want.status {
				t.Fatalf("status %d (%s), want %d", code, got, tc.want.status)
			}
			if code == 200 && got != tc.want.outcome {
				t.Fatalf("outcome %q, want %q", got, tc.want.outcome)
			}
			if code != 200 && !strings.Contains(got, tc.want.detailContains) {
				t.Fatalf("problem detail %q does not name %q", got, tc.want.detailContains)
			}
			if n := f.count(tc.want.outcome); n != 1 {
				t.Fatalf("tollgate_stripe_webhooks_total{outcome=%q} = %v, want 1", tc.want.outcome, n)
			}
			changes := f.acc.changes()
			if tc.want.noChange {
				if len(changes) != 0 {
					t.Fatalf("changes %+v, want none", changes)
				}
				return
			}
			if len(changes) != 1 {
				t.Fatalf("changes %+v, want one", changes)
			}
			got1, c := changes[0].org, changes[0].c
			wantC := billing.Change{State: tc.want.state, Plan: tc.want.plan, StripeCustomer: tc.want.customer, Cause: tc.want.cause,
				Actor: billing.ActorStripe, Ref: "evt_1", StripeEventAt: created}
			if tc.typ == "checkout.session.completed" {
				wantC.StripeEventAt = time.Time{} // linking is not ordered
			}
			if got1 != tc.want.org || c.State != wantC.State || c.Plan != wantC.Plan || c.StripeCustomer != wantC.StripeCustomer ||
				c.Cause != wantC.Cause || c.Actor != wantC.Actor || c.Ref != wantC.Ref || !c.StripeEventAt.Equal(wantC.StripeEventAt) {
				t.Fatalf("change of %s %+v, want of %s %+v", got1, c, tc.want.org, wantC)
			}
		})
	}
}

func TestStripeWebhookRejects(t *testing.T) {
	body := stripeEvent("evt_1", "invoice.paid", time.Now(), `{"id":"in_1","object":"invoice","customer":"cus_acme"}`)
	sign := func(secret string, at time.Time, b []byte) string {
		return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: b, Secret: secret, Timestamp: at}).Header
	}
	tests := []struct {
		name      string
		method    string
		body      []byte
		signature string
		status    int
		outcome   string
	}{
		{"unsigned", "POST", body, "", 400, "bad_signature"},
		{"wrong secret", "POST", body, sign("whsec_other", time.Now(), body), 400, "bad_signature"},
		{"stale timestamp", "POST", body, sign(stripeTestSecret, time.Now().Add(-10*time.Minute), body), 400, "bad_signature"},
		{"malformed header", "POST", body, "t=yesterday,v1=00", 400, "bad_signature"},
		{"signed for another body", "POST", append(bytes.Clone(body), ' '), sign(stripeTestSecret, time.Now(), body), 400, "bad_signature"},
		{"signed but not an event", "POST", []byte("not json"), sign(stripeTestSecret, time.Now(), []byte("not json")), 400, "bad_request"},
		{"wrong method", "GET", nil, "", 405, "bad_request"},
		{"oversized body", "POST", bytes.Repeat([]byte("x"), maxWebhookBody+1), "t=1,v1=00", 413, "bad_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newStripeFixture(t)
			req, _ := http.NewRequest(tc.method, f.srv.URL+"/stripe/webhook", bytes.NewReader(tc.body))
			if tc.signature != "" {
				req.Header.Set("Stripe-Signature", tc.signature)
			}
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %s %q, want %d problem", resp.StatusCode, resp.Header.Get("Content-Type"), b, tc.status)
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "POST" {
				t.Fatalf("Allow %q", resp.Header.Get("Allow"))
			}
			if n := f.count(tc.outcome); n != 1 {
				t.Fatalf("outcome %s counted %v times", tc.outcome, n)
			}
			if c := f.acc.changes(); len(c) != 0 {
				t.Fatalf("changes %+v", c)
			}
		})
	}
}

func TestStripeWebhookReplay(t *testing.T) {
	f := newStripeFixture(t)
	at := time.Now().Add(-time.Minute)
	failed := `{"id":"in_1","object":"invoice","customer":"cus_acme"}`
	if code, out := f.deliver(t, "evt_fail", "invoice.payment_failed", at, failed); code != 200 || out != "applied" {
		t.Fatalf("first delivery: %d %s", code, out)
	}
	// Stripe delivers again (a new signature, the same event).
	if code, out := f.deliver(t, "evt_fail", "invoice.payment_failed", at, failed); code != 200 || out != "duplicate" {
		t.Fatalf("second delivery: %d %s", code, out)
	}
	// Ignored events are remembered too.
	other := `{"id":"ch_1","object":"charge"}`
	for i, want := range []string{"ignored", "duplicate"} {
		if code, out := f.deliver(t, "evt_charge", "charge.succeeded", at, other); code != 200 || out != want {
			t.Fatalf("charge delivery %d: %d %s, want %s", i, code, out, want)
		}
	}
	// A 422 is not remembered: Stripe's retry is processed once the
	// customer is linked.
	sub := subscriptionObject("cus_beta", "active", price("price_pro", "pro", ""), "")
	if code, _ := f.deliver(t, "evt_sub", "customer.subscription.updated", at, sub); code != 422 {
		t.Fatalf("subscription of an unlinked customer: %d", code)
	}
	f.acc.mu.Lock()
	f.acc.orgs["beta"].StripeCustomer = "cus_beta"
	f.acc.mu.Unlock()
	if code, out := f.deliver(t, "evt_sub", "customer.subscription.updated", at, sub); code != 200 || out != "applied" {
		t.Fatalf("retried subscription event: %d %s", code, out)
	}
	if n := len(f.acc.changes()); n != 2 {
		t.Fatalf("%d changes, want 2: %+v", n, f.acc.changes())
	}
	if n := f.count("duplicate"); n != 2 {
		t.Fatalf("duplicates counted %v", n)
	}

	// The ids survive a restart: a new Stripe on the same store.
	s2 := newTestStripe(t, billing.StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
		Options{Accounts: f.acc, Store: f.st})
	f.srv.Config.Handler = s2
	if code, out := f.deliver(t, "evt_fail", "invoice.payment_failed", at, failed); code != 200 || out != "duplicate" {
		t.Fatalf("delivery after a restart: %d %s", code, out)
	}
	if n := len(f.acc.changes()); n != 2 {
		t.Fatalf("%d changes after the restart, want 2", n)
	}
}

func TestStripeWebhookOutOfOrder(t *testing.T) {
	f := newStripeFixture(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	invoice := `{"id":"in_1","object":"invoice","customer":"cus_acme"}`
	// The payment failure (newer) arrives before the earlier success.
	if code, out := f.deliver(t, "evt_fail", "invoice.payment_failed", t0.Add(time.Minute), invoice); code != 200 || out != "applied" {
		t.Fatalf("newer event: %d %s", code, out)
	}
	if code, out := f.deliver(t, "evt_paid", "invoice.paid", t0, invoice); code != 200 || out != "stale" {
		t.Fatalf("older event: %d %s, want stale", code, out)
	}
	if o := f.acc.org("acme"); o.State != sites.StatePastDue || !o.StripeEventAt.Time().Equal(t0.Add(time.Minute)) {
		t.Fatalf("org %+v, want past_due from the newer event", o)
	}
	// A stale event's id is remembered.
	if code, out := f.deliver(t, "evt_paid", "invoice.paid", t0, invoice); code != 200 || out != "duplicate" {
		t.Fatalf("stale event again: %d %s", code, out)
	}
	// Events of the same second both apply.
	if code, out := f.deliver(t, "evt_paid2", "invoice.paid", t0.Add(time.Minute), invoice); code != 200 || out != "applied" {
		t.Fatalf("same-second event: %d %s", code, out)
	}
	if n := len(f.acc.changes()); n != 2 {
		t.Fatalf("%d changes, want 2", n)
	}
}

// TestStripeCheckoutThenRetriedSubscription: the subscription is created a
// second before its checkout completes and fails (422) until checkout links
// the customer; Stripe's retry then applies the plan, not "stale".
func TestStripeCheckoutThenRetriedSubscription(t *testing.T) {
	f := newStripeFixture(t)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	sub := subscriptionObject("cus_beta", "active", price("price_pro", "pro", ""), "")
	if code, _ := f.deliver(t, "evt_sub", "customer.subscription.created", t0, sub); code != 422 {
		t.Fatalf("subscription before checkout: %d", code)
	}
	checkout := `{"id":"cs_1","object":"checkout.session","client_reference_id":"beta","customer":"cus_beta"}`
	if code, out := f.deliver(t, "evt_checkout", "checkout.session.completed", t0.Add(time.Second), checkout); code != 200 || out != "applied" {
		t.Fatalf("checkout: %d %s", code, out)
	}
	if code, out := f.deliver(t, "evt_sub", "customer.subscription.created", t0, sub); code != 200 || out != "applied" {
		t.Fatalf("retried subscription: %d %s", code, out)
	}
	if o := f.acc.org("beta"); o.Plan != "pro" || o.StripeCustomer != "cus_beta" {
		t.Fatalf("org %+v", o)
	}
}
