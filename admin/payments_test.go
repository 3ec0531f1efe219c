package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestPaymentLinkRoutes: POST /v1/orgs/{id}/checkout and /portal through
// real Billing and Stripe (stripe-mock): a link for an upgrade and for a
// customer's portal; a lower plan is 409 PLAN_DOWNGRADE_NOT_ALLOWED; the
// other refusals are clear problems; without Stripe, 503 NOT_CONFIGURED.
func TestPaymentLinkRoutes(t *testing.T) {
	ctx := context.Background()
	sm := stripetest.Start(t)
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	bill, err := billing.New(ctx, billing.Config{Plans: []billing.PlanConfig{{Name: "basic", Rank: 1}, {Name: "pro", Rank: 2}}},
		billing.Options{Sites: reg, Store: st, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: "whsec_test", WebhookHost: "billing.test", APIBase: sm.URL(),
		CheckoutSuccessURL: "https://console.example/{org}/ok", CheckoutCancelURL: "https://console.example/{org}",
		PortalReturnURL: "https://console.example/{org}"}
	pay, err := stripe.New(cfg, stripe.Options{Accounts: bill, Store: st, Metrics: prometheus.NewRegistry(), Plans: bill,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pay.Close() })
	s, err := New(Config{Token: testToken}, reg, Options{Metrics: prometheus.NewRegistry(), Accounts: bill, Payments: pay,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	e := &testEnv{srv: srv, reg: reg}
	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"basic"}`)
	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"paid","plan":"basic"}`)
	e.must(t, http.StatusOK, "PATCH", "/v1/orgs/paid", `{"stripe_customer":"cus_paid"}`)

	var link PaymentLink
	e.must(t, http.StatusOK, "POST", "/v1/orgs/acme/checkout", `{"plan":"pro"}`).json(t, &link)
	if !strings.HasPrefix(link.URL, "https://") {
		t.Fatalf("checkout link %q", link.URL)
	}
	link = PaymentLink{}
	e.must(t, http.StatusOK, "POST", "/v1/orgs/paid/portal", "").json(t, &link)
	if !strings.HasPrefix(link.URL, "https://") {
		t.Fatalf("portal link %q", link.URL)
	}
	for _, tc := range []struct {
		path, body string
		status     int
		code       reason.Code
	}{
		{"/v1/orgs/acme/checkout", `{"plan":"basic"}`, http.StatusConflict, reason.PlanDowngradeNotAllowed},
		{"/v1/orgs/paid/checkout", `{"plan":"pro"}`, http.StatusConflict, reason.Conflict},
		{"/v1/orgs/acme/checkout", `{"plan":"gold"}`, http.StatusUnprocessableEntity, reason.Invalid},
		{"/v1/orgs/acme/checkout", `{}`, http.StatusBadRequest, reason.BadRequest},
		{"/v1/orgs/nobody/checkout", `{"plan":"pro"}`, http.StatusNotFound, reason.NotFound},
		{"/v1/orgs/acme/portal", "", http.StatusConflict, reason.Conflict},
	} {
		if p := checkProblem(t, e.call(t, "POST", tc.path, tc.body), tc.status); p.Code != tc.code {
			t.Errorf("POST %s %s: code %s, want %s", tc.path, tc.body, p.Code, tc.code)
		}
	}

	bare, _ := newBillingEnv(t, billing.Config{}, nil)
	bare.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"free"}`)
	if p := checkProblem(t, bare.call(t, "POST", "/v1/orgs/acme/portal", ""), http.StatusServiceUnavailable); p.Code != reason.NotConfigured {
		t.Errorf("without Stripe: %s", p.Code)
	}
}
