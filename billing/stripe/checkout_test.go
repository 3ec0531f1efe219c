package stripe

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// fakePlans is a Plans: orgs acme (free, no customer), paying (pro,
// cus_paying), lapsed (free, cus_lapsed: a cancelled subscription) and the
// plans free (rank 0), pro (1), team (2).
type fakePlans struct{}

func (fakePlans) PlanOf(org string) (string, string, bool) {
	switch org {
	case "acme":
		return "free", "", true
	case "paying":
		return "pro", "cus_paying", true
	case "lapsed":
		return "free", "cus_lapsed", true
	}
	return "", "", false
}

func (fakePlans) Rank(plan string) (int, bool) {
	r, ok := map[string]int{"free": 0, "pro": 1, "team": 2}[plan]
	return r, ok
}

func (fakePlans) DefaultPlan() string { return "free" }

// formRecorder keeps the form bodies of the requests it passes on, by path.
type formRecorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	sent map[string]url.Values
}

func (r *formRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		form, _ := url.ParseQuery(string(b))
		r.mu.Lock()
		r.sent[req.URL.Path] = form
		r.mu.Unlock()
	}
	return r.base.RoundTrip(req)
}

// TestPaymentLinks against stripe-mock: Checkout only for a higher plan of
// an org that does not pay yet, with the org as client_reference_id,
// promotion codes allowed and the configured return URLs; the portal for
// an org with a customer; clear refusals otherwise.
func TestPaymentLinks(t *testing.T) {
	sm := stripetest.Start(t)
	rec := &formRecorder{base: http.DefaultTransport, sent: map[string]url.Values{}}
	cfg := billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test", APIBase: sm.URL(),
		CheckoutSuccessURL: "https://console.example/orgs/{org}/paid", CheckoutCancelURL: "https://console.example/orgs/{org}/billing",
		PortalReturnURL: "https://console.example/orgs/{org}"}
	s := newTestStripe(t, cfg, Options{Accounts: newStripeAccounts(), Store: storetest.Open(t), Plans: fakePlans{},
		HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}})
	ctx := context.Background()

	link, err := s.Checkout(ctx, "acme", "team")
	if err != nil || !strings.HasPrefix(link, "https://") {
		t.Fatalf("checkout: %q, %v", link, err)
	}
	form := rec.sent["/v1/checkout/sessions"]
	for k, want := range map[string]string{"client_reference_id": "acme", "allow_promotion_codes": "true", "mode": "subscription",
		"success_url": "https://console.example/orgs/acme/paid", "cancel_url": "https://console.example/orgs/acme/billing"} {
		if got := form.Get(k); got != want {
			t.Errorf("checkout session %s = %q, want %q", k, got, want)
		}
	}
	if form.Get("line_items[0][price]") == "" || form.Get("customer") != "" {
		t.Errorf("checkout session line items / customer: %v", form)
	}
	if _, err := s.Checkout(ctx, "lapsed", "pro"); err != nil || rec.sent["/v1/checkout/sessions"].Get("customer") != "cus_lapsed" {
		t.Fatalf("checkout of a lapsed customer: %v, %v", err, rec.sent["/v1/checkout/sessions"])
	}
	link, err = s.Portal(ctx, "paying")
	if err != nil || !strings.HasPrefix(link, "https://") {
		t.Fatalf("portal: %q, %v", link, err)
	}
	if f := rec.sent["/v1/billing_portal/sessions"]; f.Get("customer") != "cus_paying" || f.Get("return_url") != "https://console.example/orgs/paying" {
		t.Errorf("portal session: %v", f)
	}

	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"a lower plan", func() error { _, err := s.Checkout(ctx, "paying", "free"); return err }, billing.ErrDowngrade},
		{"the same plan", func() error { _, err := s.Checkout(ctx, "acme", "free"); return err }, billing.ErrDowngrade},
		{"a paying org", func() error { _, err := s.Checkout(ctx, "paying", "team"); return err }, ErrSubscribed},
		{"no such plan", func() error { _, err := s.Checkout(ctx, "acme", "gold"); return err }, sites.ErrInvalid},
		{"no such org", func() error { _, err := s.Checkout(ctx, "nobody", "team"); return err }, sites.ErrNotFound},
		{"portal without a customer", func() error { _, err := s.Portal(ctx, "acme"); return err }, ErrNoCustomer},
	} {
		if err := tc.call(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}

	// Without the return URLs, or with Stripe down.
	bare := newTestStripe(t, billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test",
		APIBase: sm.URL()}, Options{Accounts: newStripeAccounts(), Store: storetest.Open(t), Plans: fakePlans{}})
	if _, err := bare.Checkout(ctx, "acme", "team"); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("checkout without return URLs: %v", err)
	}
	sm.Stop()
	if _, err := s.Portal(ctx, "paying"); !errors.Is(err, ErrUpstream) {
		t.Errorf("portal with Stripe down: %v", err)
	}
}
