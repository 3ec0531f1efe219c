package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stripe/stripe-go/v76/webhook"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

const stripeTestSecret = "whsec_test_0123456789abcdef"

// stripeAccounts is a fake Accounts: orgs and plans in memory, the
// lifecycle's rules (transitions, suspension, stale events), and a record
// of every Change it applied.
type stripeAccounts struct {
	mu      sync.Mutex
	orgs    map[string]*sites.Org
	quotas  map[string]int64 // plan → egress bytes
	applied []stripeApplied
}

type stripeApplied struct {
	org string
	c   Change
}

var _ Accounts = (*stripeAccounts)(nil)

// newStripeAccounts has plans free, pro and team (no quotas) and orgs acme
// (linked to cus_acme) and beta (no customer), both active on free.
func newStripeAccounts() *stripeAccounts {
	return &stripeAccounts{
		orgs: map[string]*sites.Org{
			"acme": {ID: "acme", Plan: "free", State: sites.StateActive, StripeCustomer: "cus_acme"},
			"beta": {ID: "beta", Plan: "free", State: sites.StateActive},
		},
		quotas: map[string]int64{"free": 0, "pro": 0, "team": 0},
	}
}

func (a *stripeAccounts) Apply(_ context.Context, id string, c Change) (sites.Org, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.orgs[id]
	if o == nil {
		return sites.Org{}, fmt.Errorf("org %q: %w", id, sites.ErrNotFound)
	}
	if !c.StripeEventAt.IsZero() && c.StripeEventAt.Before(o.StripeEventAt) {
		return *o, fmt.Errorf("%w: event of %s", ErrStale, c.StripeEventAt)
	}
	if _, ok := a.quotas[c.Plan]; c.Plan != "" && !ok {
		return *o, fmt.Errorf("%w: plan %q does not exist", sites.ErrInvalid, c.Plan)
	}
	next := *o
	if c.State != "" && c.State != o.State && o.State != sites.StateSuspended {
		if !allowed(o.State, c.State) {
			return *o, fmt.Errorf("%w: %s → %s", ErrTransition, o.State, c.State)
		}
		next.State = c.State
	}
	if c.Plan != "" {
		next.Plan = c.Plan
	}
	if c.StripeCustomer != "" {
		next.StripeCustomer = c.StripeCustomer
	}
	if !c.StripeEventAt.IsZero() {
		next.StripeEventAt = c.StripeEventAt
	}
	*o = next
	a.applied = append(a.applied, stripeApplied{id, c})
	return next, nil
}

func (a *stripeAccounts) OrgByCustomer(customer string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, o := range a.orgs {
		if o.StripeCustomer == customer { // like *Billing: "" matches orgs without one
			return id, true
		}
	}
	return "", false
}

func (a *stripeAccounts) OrgExists(org string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.orgs[org] != nil
}

func (a *stripeAccounts) PlanExists(plan string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.quotas[plan]
	return ok
}

func (a *stripeAccounts) DefaultPlan() string { return "free" }

func (a *stripeAccounts) Quota(org string) (int64, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.orgs[org]
	if o == nil {
		return 0, ""
	}
	return a.quotas[o.Plan], o.StripeCustomer
}

func (a *stripeAccounts) Orgs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for id := range a.orgs {
		ids = append(ids, id)
	}
	return ids
}

// set puts an org (replacing it) and its plan's quota.
func (a *stripeAccounts) set(o sites.Org, quota int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.orgs[o.ID] = &o
	a.quotas[o.Plan] = quota
}

func (a *stripeAccounts) org(id string) sites.Org {
	a.mu.Lock()
	defer a.mu.Unlock()
	return *a.orgs[id]
}

func (a *stripeAccounts) changes() []stripeApplied {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.applied)
}

// stripeClock is a settable clock.
type stripeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stripeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stripeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// stripeFixture is a Stripe on a fresh store with the fake accounts, its
// webhook served by a real HTTP server.
type stripeFixture struct {
	acc *stripeAccounts
	st  *store.Bolt
	s   *Stripe
	srv *httptest.Server
}

func newStripeFixture(t *testing.T) *stripeFixture {
	t.Helper()
	f := &stripeFixture{acc: newStripeAccounts(), st: storetest.Open(t)}
	f.s = newTestStripe(t, StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
		StripeOptions{Accounts: f.acc, Store: f.st})
	f.srv = httptest.NewServer(f.s)
	t.Cleanup(f.srv.Close)
	return f
}

// newTestStripe builds a Stripe with a fresh registry and a test logger,
// closed when the test ends (before its store).
func newTestStripe(t *testing.T, cfg StripeConfig, opts StripeOptions) *Stripe {
	t.Helper()
	opts.Metrics = prometheus.NewRegistry()
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := NewStripe(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// stripeEvent is an event as Stripe sends it. The API version is not
// stripe-go's pin on purpose.
func stripeEvent(id, typ string, created time.Time, object string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"object":"event","api_version":"2024-06-20","created":%d,"livemode":false,"type":%q,"data":{"object":%s}}`,
		id, created.Unix(), typ, object)
}

// post sends body with the given Stripe-Signature ("" for none).
func (f *stripeFixture) post(t *testing.T, body []byte, signature string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/stripe/webhook", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("Stripe-Signature", signature)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// deliver signs and posts an event; it returns the status and the
// response's outcome (200) or problem detail.
func (f *stripeFixture) deliver(t *testing.T, id, typ string, created time.Time, object string) (int, string) {
	t.Helper()
	body := stripeEvent(id, typ, created, object)
	signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: stripeTestSecret, Timestamp: time.Now()})
	code, h, b := f.post(t, signed.Payload, signed.Header)
	var resp struct {
		Received bool
		Outcome  string
		Status   int
		Detail   string
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatalf("%s: response %d %q: %v", typ, code, b, err)
	}
	if code == http.StatusOK {
		if !resp.Received || h.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: 200 response %q (%s)", typ, b, h.Get("Content-Type"))
		}
		return code, resp.Outcome
	}
	if h.Get("Content-Type") != "application/problem+json" || resp.Status != code {
		t.Fatalf("%s: %d response %q (%s) is not a problem", typ, code, b, h.Get("Content-Type"))
	}
	return code, resp.Detail
}

func (f *stripeFixture) count(outcome string) float64 {
	return testutil.ToFloat64(f.s.webhooks.WithLabelValues(outcome))
}

func subscriptionObject(customer, status, priceJSON, metadata string) string {
	items := `[]`
	if priceJSON != "" {
		items = `[{"id":"si_1","object":"subscription_item","price":` + priceJSON + `}]`
	}
	if metadata == "" {
		metadata = `{}`
	}
	return fmt.Sprintf(`{"id":"sub_1","object":"subscription","customer":%q,"status":%q,"metadata":%s,"items":{"object":"list","data":%s}}`,
		customer, status, metadata, items)
}

func price(id, lookupKey, planMeta string) string {
	meta := `{}`
	if planMeta != "" {
		meta = fmt.Sprintf(`{"tollgate_plan":%q}`, planMeta)
	}
	lk := `null`
	if lookupKey != "" {
		lk = fmt.Sprintf("%q", lookupKey)
	}
	return fmt.Sprintf(`{"id":%q,"object":"price","lookup_key":%s,"metadata":%s}`, id, lk, meta)
}

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
			wantC := Change{State: tc.want.state, Plan: tc.want.plan, StripeCustomer: tc.want.customer, Cause: tc.want.cause,
				Actor: ActorStripe, Ref: "evt_1", StripeEventAt: created}
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
	s2 := newTestStripe(t, StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
		StripeOptions{Accounts: f.acc, Store: f.st})
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
	if o := f.acc.org("acme"); o.State != sites.StatePastDue || !o.StripeEventAt.Equal(t0.Add(time.Minute)) {
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

func TestStripeConfig(t *testing.T) {
	ok := StripeConfig{SecretKey: "sk_test_1", WebhookSecret: "whsec_1", WebhookHost: "billing.example.net"}
	tests := []struct {
		name string
		edit func(c *StripeConfig)
		want []string // keys named by the error; none: valid
	}{
		{"valid", func(*StripeConfig) {}, nil},
		{"off", func(c *StripeConfig) { *c = StripeConfig{WebhookHost: "not a host"} }, nil},
		{"webhook only", func(c *StripeConfig) { c.SecretKey = "" }, nil},
		{"secret key only", func(c *StripeConfig) { c.WebhookSecret, c.WebhookHost = "", "" },
			[]string{"billing.stripe.webhook_secret", "billing.stripe.webhook_host"}},
		{"publishable key", func(c *StripeConfig) { c.SecretKey = "pk_test_1" }, []string{"billing.stripe.secret_key"}},
		{"not a signing secret", func(c *StripeConfig) { c.WebhookSecret = "hunter2" }, []string{"billing.stripe.webhook_secret"}},
		{"host with a port", func(c *StripeConfig) { c.WebhookHost = "billing.example.net:443" }, []string{"billing.stripe.webhook_host"}},
		{"relative path", func(c *StripeConfig) { c.WebhookPath = "stripe" }, []string{"billing.stripe.webhook_path"}},
		{"api base", func(c *StripeConfig) { c.APIBase = "api.stripe.com" }, []string{"billing.stripe.api_base"}},
		{"durations", func(c *StripeConfig) { c.ReportInterval, c.ReportDelay, c.Tolerance = time.Millisecond, -1, -1 },
			[]string{"billing.stripe.report_interval", "billing.stripe.report_delay", "billing.stripe.tolerance"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid, want errors naming %v", tc.want)
			}
			for _, k := range tc.want {
				if !strings.Contains(err.Error(), k+":") {
					t.Fatalf("%v does not name %s", err, k)
				}
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "pk_test_1") {
				t.Fatalf("the error repeats a secret: %v", err)
			}
		})
	}

	var d StripeConfig
	d.Defaults()
	if d.WebhookPath != "/stripe/webhook" || d.APIBase != "https://api.stripe.com" || d.MeterEventName != "tollgate_egress_overage" ||
		d.ReportInterval != time.Minute || d.ReportDelay != 5*time.Minute || d.Tolerance != 5*time.Minute || d.Enabled() {
		t.Fatalf("defaults %+v", d)
	}

	st := storetest.Open(t)
	if _, err := NewStripe(StripeConfig{}, StripeOptions{Accounts: newStripeAccounts(), Store: st, Metrics: prometheus.NewRegistry()}); err == nil {
		t.Fatal("NewStripe without secrets: no error")
	}
	if _, err := NewStripe(ok, StripeOptions{Store: st}); err == nil || !strings.Contains(err.Error(), "Accounts") {
		t.Fatalf("NewStripe without Accounts: %v", err)
	}
	var nilStripe *Stripe
	if err := nilStripe.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStripeOverages(t *testing.T) {
	ps := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return ps.Add(time.Duration(n) * time.Hour) }
	pt := func(n int, bytes int64) meter.Point {
		return meter.Point{Start: h(n), Values: meter.Values{EgressBytes: bytes}}
	}
	tests := []struct {
		name     string
		points   []meter.Point
		from, to int
		quota    int64
		want     map[int]int64
	}{
		{"below the quota", []meter.Point{pt(0, 400), pt(1, 500)}, 0, 5, 1000, map[int]int64{}},
		{"crossing within an hour", []meter.Point{pt(0, 900), pt(3, 250)}, 0, 5, 1000, map[int]int64{3: 150}},
		{"every hour past the quota", []meter.Point{pt(0, 1200), pt(1, 10), pt(4, 7)}, 0, 5, 1000, map[int]int64{0: 200, 1: 10, 4: 7}},
		{"hours before from count toward the total only", []meter.Point{pt(0, 900), pt(2, 300), pt(3, 40)}, 3, 5, 1000, map[int]int64{3: 40}},
		{"points outside the range are not counted", []meter.Point{pt(-1, 5000), pt(1, 999), pt(6, 5000)}, 0, 5, 1000, map[int]int64{}},
		{"exactly the quota", []meter.Point{pt(0, 1000)}, 0, 2, 1000, map[int]int64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[int]int64{}
			for _, o := range overages(tc.points, ps, h(tc.from), h(tc.to), tc.quota) {
				got[int(o.start.Sub(ps)/time.Hour)] = o.bytes
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("overages %v, want %v", got, tc.want)
			}
		})
	}
}

// stripeUsage is a fake meter.Reader.
type stripeUsage struct {
	mu     sync.Mutex
	points map[string][]meter.Point
}

func (u *stripeUsage) add(org string, hour time.Time, egress int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.points == nil {
		u.points = map[string][]meter.Point{}
	}
	u.points[org] = append(u.points[org], meter.Point{Start: hour, Values: meter.Values{EgressBytes: egress}})
}

func (u *stripeUsage) Hourly(_ context.Context, org string, from, to time.Time) ([]meter.Point, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []meter.Point
	for _, p := range u.points[org] {
		if !p.Start.Before(from) && p.Start.Before(to) {
			out = append(out, p)
		}
	}
	return out, nil
}

func (u *stripeUsage) PeriodTotals(context.Context, string, string, int) ([]meter.OrgTotal, string, error) {
	return nil, "", errors.New("not used")
}

// meterSend is one meter event request as stripe-mock received it.
type meterSend struct {
	identifier, customer, value, eventName string
	timestamp                              string
}

// meterRecorder is an http.RoundTripper that records the meter events
// stripe-mock accepted and counts failed attempts.
type meterRecorder struct {
	base   http.RoundTripper
	mu     sync.Mutex
	ok     []meterSend
	failed int
}

func (r *meterRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var form url.Values
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		form, _ = url.ParseQuery(string(b))
	}
	resp, err := r.base.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && resp.StatusCode == http.StatusOK && req.URL.Path == "/v1/billing/meter_events" {
		r.ok = append(r.ok, meterSend{identifier: form.Get("identifier"), customer: form.Get("payload[stripe_customer_id]"),
			value: form.Get("payload[value]"), eventName: form.Get("event_name"), timestamp: form.Get("timestamp")})
	} else {
		r.failed++
	}
	return resp, err
}

func (r *meterRecorder) sent() []meterSend {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ok)
}

func (r *meterRecorder) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// newMeterRecorder records on a transport without keep-alive, so a
// restarted stripe-mock never meets a connection of the previous one.
func newMeterRecorder() *meterRecorder {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	return &meterRecorder{base: tr}
}

func TestStripeMeterEvents(t *testing.T) {
	sm := stripetest.Start(t)
	rec := newMeterRecorder()
	acc := newStripeAccounts()
	usage := &stripeUsage{}
	st := storetest.Open(t)
	clock := &stripeClock{}
	cfg := StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test", APIBase: sm.URL()}
	open := func() *Stripe {
		return newTestStripe(t, cfg, StripeOptions{Accounts: acc, Store: st, Usage: usage, Now: clock.Now,
			HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}})
	}

	day := func(d, hour int) time.Time { return time.Date(2026, 3, d, hour, 0, 0, 0, time.UTC) }
	acc.set(sites.Org{ID: "acme", Plan: "metered", State: sites.StateActive, StripeCustomer: "cus_acme"}, 1000)
	acc.set(sites.Org{ID: "delta", Plan: "small", State: sites.StateActive, StripeCustomer: "cus_delta"}, 500)
	acc.set(sites.Org{ID: "beta", Plan: "unlimited", State: sites.StateActive, StripeCustomer: "cus_beta"}, 0)
	acc.set(sites.Org{ID: "gamma", Plan: "nocustomer", State: sites.StateActive}, 100)
	usage.add("acme", day(28, 23).AddDate(0, -1, 0), 5000) // February: another period
	usage.add("acme", day(1, 0), 600)
	usage.add("acme", day(2, 5), 300)   // 900
	usage.add("acme", day(5, 10), 250)  // 1150: 150 over
	usage.add("acme", day(6, 0), 100)   // 100 over
	usage.add("acme", day(10, 10), 50)  // 50 over
	usage.add("acme", day(10, 11), 999) // due from 12:05
	usage.add("delta", day(3, 7), 2000) // 1500 over
	usage.add("beta", day(3, 7), 1<<40) // no quota
	usage.add("gamma", day(3, 7), 1<<40)

	type sent struct {
		customer string
		value    string
		ts       time.Time
	}
	want := map[string]sent{}
	expect := func(org, customer string, hour time.Time, value string) {
		want[meterIdentifier(org, hour)] = sent{customer, value, hour.Add(time.Hour - time.Second)}
	}
	s := open()
	pass := func(s *Stripe, at time.Time) error {
		t.Helper()
		clock.Set(at)
		return s.ReportNow(context.Background())
	}
	check := func(step string) {
		t.Helper()
		got := map[string]sent{}
		for _, m := range rec.sent() {
			if _, dup := got[m.identifier]; dup {
				t.Fatalf("%s: %s sent twice", step, m.identifier)
			}
			if m.eventName != "tollgate_egress_overage" {
				t.Fatalf("%s: event_name %q", step, m.eventName)
			}
			var ts int64
			fmt.Sscan(m.timestamp, &ts)
			got[m.identifier] = sent{m.customer, m.value, time.Unix(ts, 0).UTC()}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: sent\n%v\nwant\n%v", step, got, want)
		}
	}

	// At 12:03 the hours that ended by 11:58 (report_delay 5m) are due:
	// through 10:00-11:00. The cursor starts at March 1.
	if err := pass(s, day(10, 12).Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	expect("acme", "cus_acme", day(5, 10), "150")
	expect("acme", "cus_acme", day(6, 0), "100")
	expect("acme", "cus_acme", day(10, 10), "50")
	expect("delta", "cus_delta", day(3, 7), "1500")
	check("first pass")
	if s.Pending() != 0 {
		t.Fatalf("pending %d", s.Pending())
	}
	// Nothing new until an hour is due; then only that hour.
	if err := pass(s, day(10, 12).Add(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("same hour")
	if err := pass(s, day(10, 13).Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	expect("acme", "cus_acme", day(10, 11), "999")
	check("next hour")

	// Stripe down: the overage stays pending, across passes.
	sm.Stop()
	usage.add("acme", day(10, 13), 10)
	usage.add("delta", day(10, 13), 20)
	if err := pass(s, day(10, 14).Add(5*time.Minute)); err == nil {
		t.Fatal("pass with Stripe down: no error")
	} else {
		t.Logf("pass with Stripe down: %v", err)
	}
	if err := pass(s, day(10, 14).Add(30*time.Minute)); err == nil {
		t.Fatal("second pass with Stripe down: no error")
	}
	if s.Pending() != 2 || rec.failures() == 0 {
		t.Fatalf("pending %d, failures %d; want 2 pending after failures", s.Pending(), rec.failures())
	}
	check("Stripe down")
	if n := testutil.ToFloat64(s.retry); n < 1 {
		t.Fatalf("retries counted %v", n)
	}

	// A restart of tollgate (a new Stripe on the same store) and of Stripe:
	// the pending events are sent once their retry is due.
	_ = s.Close()
	s = open()
	if s.Pending() != 2 {
		t.Fatalf("pending after a restart: %d", s.Pending())
	}
	sm.Restart()
	if err := pass(s, day(10, 17)); err != nil {
		t.Fatal(err)
	}
	expect("acme", "cus_acme", day(10, 13), "10")
	expect("delta", "cus_delta", day(10, 13), "20")
	check("after the restarts")
	if s.Pending() != 0 || testutil.ToFloat64(s.sent) != 2 {
		t.Fatalf("pending %d, sent %v", s.Pending(), testutil.ToFloat64(s.sent))
	}

	// The period ends: March's last hour is reported in April, and April
	// starts from zero.
	usage.add("acme", day(31, 23), 5)
	usage.add("acme", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), 1200)
	if err := pass(s, time.Date(2026, 4, 1, 1, 10, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	expect("acme", "cus_acme", day(31, 23), "5")
	expect("acme", "cus_acme", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), "200")
	check("new period")
}

func TestStripeRun(t *testing.T) {
	sm := stripetest.Start(t)
	rec := newMeterRecorder()
	acc := newStripeAccounts()
	acc.set(sites.Org{ID: "acme", Plan: "metered", State: sites.StateActive, StripeCustomer: "cus_acme"}, 100)
	usage := &stripeUsage{}
	hour := time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)
	usage.add("acme", hour, 150)
	clock := &stripeClock{t: hour.Add(2 * time.Hour)}
	s := newTestStripe(t, StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test",
		APIBase: sm.URL(), ReportInterval: 20 * time.Millisecond},
		StripeOptions{Accounts: acc, Store: storetest.Open(t), Usage: usage, Now: clock.Now,
			HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(context.Background())
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(rec.sent()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run sent nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if got := rec.sent(); len(got) != 1 || got[0].identifier != meterIdentifier("acme", hour) || got[0].value != "50" {
		t.Fatalf("sent %+v", got)
	}
	s.Run(context.Background()) // after Close: returns at once
}

// TestStripeMeterRejected: an event Stripe rejects (4xx) is kept and
// retried without holding up the others, and dropped once too old for
// Stripe to accept.
func TestStripeMeterRejected(t *testing.T) {
	var mu sync.Mutex
	var ok []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id := r.PostForm.Get("identifier")
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(id, "-acme-") {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"type":"invalid_request_error","message":"No such customer: 'cus_acme'"}}`)
			return
		}
		mu.Lock()
		ok = append(ok, id)
		mu.Unlock()
		_, _ = io.WriteString(w, `{"object":"billing.meter_event","identifier":"`+id+`"}`)
	}))
	t.Cleanup(api.Close)
	acc := newStripeAccounts()
	acc.set(sites.Org{ID: "acme", Plan: "metered", State: sites.StateActive, StripeCustomer: "cus_acme"}, 100)
	acc.set(sites.Org{ID: "delta", Plan: "metered", State: sites.StateActive, StripeCustomer: "cus_delta"}, 100)
	usage := &stripeUsage{}
	hour := time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)
	usage.add("acme", hour, 150)
	usage.add("delta", hour, 170)
	clock := &stripeClock{t: hour.Add(2 * time.Hour)}
	s := newTestStripe(t, StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test", APIBase: api.URL},
		StripeOptions{Accounts: acc, Store: storetest.Open(t), Usage: usage, Now: clock.Now})

	err := s.ReportNow(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP 400 invalid_request_error: No such customer") {
		t.Fatalf("pass: %v", err)
	}
	mu.Lock()
	sentIDs := slices.Clone(ok)
	mu.Unlock()
	if len(sentIDs) != 1 || sentIDs[0] != meterIdentifier("delta", hour) {
		t.Fatalf("sent %v: the rejected event held up the others", sentIDs)
	}
	if s.Pending() != 1 || testutil.ToFloat64(s.retry) != 1 {
		t.Fatalf("pending %d, retries %v", s.Pending(), testutil.ToFloat64(s.retry))
	}
	// Not due again at once: backoff.
	if err := s.ReportNow(context.Background()); err != nil || testutil.ToFloat64(s.retry) != 1 {
		t.Fatalf("second pass: %v, retries %v", err, testutil.ToFloat64(s.retry))
	}
	// 36 days later Stripe would not take it any more.
	clock.Set(hour.Add(36 * 24 * time.Hour))
	if err := s.ReportNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.Pending() != 0 || testutil.ToFloat64(s.dropped) != 1 {
		t.Fatalf("pending %d, dropped %v", s.Pending(), testutil.ToFloat64(s.dropped))
	}
}
