package stripe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/hooks"
	"github.com/tollgate-edge/tollgate/internal/storetest"
)

// hookRecorder is an Emitter that keeps what it was given; fail makes Emit
// fail.
type hookRecorder struct {
	mu     sync.Mutex
	events []billing.HookEvent
	fail   bool
}

func (r *hookRecorder) Emit(_ context.Context, e billing.HookEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("outbox full")
	}
	r.events = append(r.events, e)
	return nil
}

func (r *hookRecorder) emitted() []billing.HookEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]billing.HookEvent(nil), r.events...)
}

// newDiscountFixture is newStripeFixture with hooks.
func newDiscountFixture(t *testing.T, h Emitter) *stripeFixture {
	t.Helper()
	f := &stripeFixture{acc: newStripeAccounts(), st: storetest.Open(t)}
	f.s = newTestStripe(t, billing.StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
		Options{Accounts: f.acc, Store: f.st, Hooks: h})
	f.srv = httptest.NewServer(f.s)
	t.Cleanup(f.srv.Close)
	return f
}

// discountObject is a discount as Stripe sends it; code "" leaves the
// coupon's metadata empty (a coupon made in the dashboard).
func discountJSON(id, customer, code string) string {
	meta := `{}`
	if code != "" {
		meta = fmt.Sprintf(`{"tollgate_code":%q}`, code)
	}
	return fmt.Sprintf(`{"id":%q,"object":"discount","customer":%q,"subscription":"sub_1","promotion_code":"promo_1",`+
		`"coupon":{"id":"co_25","object":"coupon","percent_off":25,"amount_off":null,"currency":null,"duration":"repeating",`+
		`"duration_in_months":3,"metadata":%s}}`, id, customer, meta)
}

// TestCouponCashed: customer.discount.created queues coupon.cashed for the
// customer's org once, whatever the redeliveries (and across a restart);
// out of order it still cashes, older than the event id retention it is
// stale; an unknown customer and a failing outbox are retried by Stripe.
func TestCouponCashed(t *testing.T) {
	rec := &hookRecorder{}
	f := newDiscountFixture(t, rec)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	disc := discountJSON("di_1", "cus_acme", "SPRING25")

	// A newer invoice event first: a discount is a fact, not a state.
	if code, out := f.deliver(t, "evt_paid", "invoice.paid", t0.Add(time.Minute), `{"id":"in_1","object":"invoice","customer":"cus_acme"}`); code != 200 || out != "applied" {
		t.Fatalf("invoice.paid: %d %s", code, out)
	}
	for i, want := range []string{"applied", "duplicate", "duplicate"} {
		if code, out := f.deliver(t, "evt_disc", eventDiscountCreated, t0, disc); code != 200 || out != want {
			t.Fatalf("delivery %d: %d %s, want %s", i, code, out, want)
		}
	}
	// The ids survive a restart.
	f.s = newTestStripe(t, billing.StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
		Options{Accounts: f.acc, Store: f.st, Hooks: rec})
	f.srv.Config.Handler = f.s
	if code, out := f.deliver(t, "evt_disc", eventDiscountCreated, t0, disc); code != 200 || out != "duplicate" {
		t.Fatalf("delivery after a restart: %d %s", code, out)
	}
	got := rec.emitted()
	if len(got) != 1 {
		t.Fatalf("%d hooks, want 1: %+v", len(got), got)
	}
	e := got[0]
	want := map[string]any{"source": "stripe", "code": "SPRING25", "coupon": "co_25", "discount": "di_1", "percent_off": 25.0, "duration": "repeating",
		"duration_in_months": int64(3), "promotion_code": "promo_1", "subscription": "sub_1", "stripe_event": "evt_disc"}
	if e.ID != "coupon.cashed:di_1" || e.Type != "coupon.cashed" || e.Org != "acme" || !e.At.Equal(t0) || len(e.Data) != len(want) {
		t.Fatalf("hook %+v", e)
	}
	for k, v := range want {
		if e.Data[k] != v {
			t.Errorf("data.%s = %#v, want %#v", k, e.Data[k], v)
		}
	}
	if n := len(f.acc.changes()); n != 1 {
		t.Fatalf("%d account changes, want the invoice's only", n)
	}

	// Older than the retention of event ids: stale, not cashed again.
	old := time.Now().Add(-stripeEventRetention - time.Hour)
	if code, out := f.deliver(t, "evt_old", eventDiscountCreated, old, discountJSON("di_0", "cus_acme", "SPRING25")); code != 200 || out != "stale" {
		t.Fatalf("old discount: %d %s", code, out)
	}

	// An unknown customer is 422 (retried) until it is linked.
	if code, _ := f.deliver(t, "evt_beta", eventDiscountCreated, t0, discountJSON("di_2", "cus_beta", "")); code != 422 {
		t.Fatalf("unknown customer: %d", code)
	}
	f.acc.mu.Lock()
	f.acc.orgs["beta"].StripeCustomer = "cus_beta"
	f.acc.mu.Unlock()
	// The outbox failing is 500 (retried), and not remembered.
	rec.mu.Lock()
	rec.fail = true
	rec.mu.Unlock()
	if code, _ := f.deliver(t, "evt_beta", eventDiscountCreated, t0, discountJSON("di_2", "cus_beta", "")); code != 500 {
		t.Fatalf("outbox failing: %d", code)
	}
	rec.mu.Lock()
	rec.fail = false
	rec.mu.Unlock()
	if code, out := f.deliver(t, "evt_beta", eventDiscountCreated, t0, discountJSON("di_2", "cus_beta", "")); code != 200 || out != "applied" {
		t.Fatalf("retried discount: %d %s", code, out)
	}
	got = rec.emitted()
	if len(got) != 2 || got[1].Org != "beta" || got[1].Data["code"] != "" {
		t.Fatalf("hooks %+v", got)
	}
	if f.count("stale") != 1 || f.count("unknown_org") != 1 || f.count("error") != 1 {
		t.Fatalf("outcomes: stale %v, unknown_org %v, error %v", f.count("stale"), f.count("unknown_org"), f.count("error"))
	}
}

// TestCouponCashedWithoutHooks: with no hooks configured the event is
// ignored (and remembered).
func TestCouponCashedWithoutHooks(t *testing.T) {
	f := newDiscountFixture(t, nil)
	at := time.Now().Add(-time.Minute)
	for i, want := range []string{"ignored", "duplicate"} {
		if code, out := f.deliver(t, "evt_disc", eventDiscountCreated, at, discountJSON("di_1", "cus_acme", "X")); code != 200 || out != want {
			t.Fatalf("delivery %d: %d %s, want %s", i, code, out, want)
		}
	}
}

// TestCouponCashedDelivered: through the real hooks outbox to a receiver,
// signed; Stripe's redeliveries give one delivery.
func TestCouponCashedDelivered(t *testing.T) {
	const secret = "0123456789abcdef-hook-secret"
	var mu sync.Mutex
	var bodies [][]byte
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := hooks.VerifySignature(secret, r.Header.Get("Tollgate-Signature"), b, time.Minute, time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
	}))
	t.Cleanup(rcv.Close)
	h, err := hooks.New([]billing.HookConfig{{URL: rcv.URL, Secret: secret, Events: []string{"coupon.cashed"}}},
		hooks.Options{Store: storetest.Open(t), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = h.Close() })

	f := newDiscountFixture(t, h)
	at := time.Now().Add(-time.Minute)
	for range 3 {
		if code, out := f.deliver(t, "evt_disc", eventDiscountCreated, at, discountJSON("di_1", "cus_acme", "SPRING25")); code != 200 || (out != "applied" && out != "duplicate") {
			t.Fatalf("delivery: %d %s", code, out)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("coupon.cashed not delivered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("%d deliveries, want 1: %q", len(bodies), bodies)
	}
}
