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
	"github.com/tollgate-edge/tollgate/tokens"
)

// stripeEnv is the admin API over real Billing and Stripe (stripe-mock),
// with org tokens: org paid (linked to cus_paid), org acme (no customer),
// and paidRead, a read-only token of paid.
type stripeEnv struct {
	*testEnv
	sm       *stripetest.Mock
	paidRead string
}

func newStripeEnv(t *testing.T) *stripeEnv {
	t.Helper()
	sm := stripetest.Start(t)
	return newStripeEnvAt(t, sm, sm.URL())
}

// newStripeEnvAt is newStripeEnv with Stripe's API at apiBase (a proxy to
// sm).
func newStripeEnvAt(t *testing.T, sm *stripetest.Mock, apiBase string) *stripeEnv {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	bill, err := billing.New(ctx, billing.Config{}, billing.Options{Sites: reg, Store: st, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: "whsec_test", WebhookHost: "billing.test", APIBase: apiBase}
	pay, err := stripe.New(cfg, stripe.Options{Accounts: bill, Store: st, Metrics: prometheus.NewRegistry(), Plans: bill, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pay.Close() })
	ts, err := tokens.New(st, tokens.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Token: testToken}, reg, Options{Metrics: prometheus.NewRegistry(), Accounts: bill, Payments: pay,
		Invoicing: pay, Coupons: pay, Tokens: ts, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	e := &stripeEnv{testEnv: &testEnv{srv: srv, reg: reg}, sm: sm}
	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"free"}`)
	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"paid","plan":"free"}`)
	e.must(t, http.StatusOK, "PATCH", "/v1/orgs/paid", `{"stripe_customer":"cus_paid"}`)
	_, secret, err := ts.Create(ctx, tokens.Spec{Org: "paid", Name: "read", Scopes: []tokens.Scope{tokens.Read}, CreatedBy: tokens.CreatorOperator})
	if err != nil {
		t.Fatal(err)
	}
	e.paidRead = secret
	return e
}

// TestInvoiceAndCouponRoutes: POST and GET /v1/orgs/{id}/invoices and
// /v1/coupons through real Billing and Stripe (stripe-mock), the problem
// codes of bad input, the tenant's read access to its own invoices only,
// 502 with Stripe down and 503 without Stripe.
func TestInvoiceAndCouponRoutes(t *testing.T) {
	e := newStripeEnv(t)
	var inv stripe.Invoice
	e.must(t, http.StatusCreated, "POST", "/v1/orgs/paid/invoices",
		`{"items":[{"description":"Setup fee","amount":5000},{"description":"Migration","amount":12000}],"due_days":14}`).json(t, &inv)
	if inv.ID == "" || !inv.Sent {
		t.Fatalf("invoice %+v", inv)
	}
	var list InvoiceList
	e.must(t, http.StatusOK, "GET", "/v1/orgs/paid/invoices", "").json(t, &list)
	if len(list.Invoices) == 0 || list.Invoices[0].ID == "" {
		t.Fatalf("invoices %+v", list)
	}
	var cp stripe.Coupon
	e.must(t, http.StatusCreated, "POST", "/v1/coupons", `{"code":"SPRING25","percent_off":25,"duration":"repeating","duration_in_months":3,"max_redemptions":100}`).json(t, &cp)
	if cp.PromotionCode == "" || cp.Coupon == "" {
		t.Fatalf("coupon %+v", cp)
	}
	var coupons CouponList
	e.must(t, http.StatusOK, "GET", "/v1/coupons", "").json(t, &coupons)
	if len(coupons.Coupons) == 0 {
		t.Fatalf("coupons %+v", coupons)
	}

	item := `{"description":"Setup fee","amount":5000}`
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               reason.Code
		detail             string
	}{
		{"POST", "/v1/orgs/paid/invoices", `{"items":[]}`, 400, reason.BadRequest, "items"},
		{"POST", "/v1/orgs/paid/invoices", `{"items":[{"description":"Refund","amount":-500}]}`, 400, reason.BadRequest, "items[0].amount"},
		{"POST", "/v1/orgs/paid/invoices", `{"items":[{"description":"","amount":500}]}`, 400, reason.BadRequest, "items[0].description"},
		{"POST", "/v1/orgs/paid/invoices", `{"items":[` + item + `],"due_days":-3}`, 400, reason.BadRequest, "due_days"},
		{"POST", "/v1/orgs/paid/invoices", `{"items":[` + item + `],"due_days":"14d"}`, 400, reason.BadRequest, "due_days"},
		{"POST", "/v1/orgs/paid/invoices", `{"items":[` + item + `],"due":14}`, 400, reason.BadRequest, "due"},
		{"POST", "/v1/orgs/acme/invoices", `{"items":[` + item + `]}`, 409, reason.Conflict, "no Stripe customer"},
		{"POST", "/v1/orgs/nobody/invoices", `{"items":[` + item + `]}`, 404, reason.NotFound, "nobody"},
		{"GET", "/v1/orgs/nobody/invoices", "", 404, reason.NotFound, "nobody"},
		{"POST", "/v1/coupons", `{"code":"SPRING 25","percent_off":25,"duration":"once"}`, 400, reason.BadRequest, "code"},
		{"POST", "/v1/coupons", `{"code":"X","percent_off":25,"amount_off":5,"duration":"once"}`, 400, reason.BadRequest, "exactly one"},
		{"POST", "/v1/coupons", `{"code":"X","amount_off":500,"duration":"once"}`, 400, reason.BadRequest, "currency"},
		{"POST", "/v1/coupons", `{"code":"X","percent_off":25,"duration":"weekly"}`, 400, reason.BadRequest, "duration"},
		{"POST", "/v1/coupons", `{"code":"X","percent_off":25,"duration":"once","expires_at":"2001-01-01T00:00:00Z"}`, 400, reason.BadRequest, "expires_at"},
	} {
		p := checkProblem(t, e.call(t, tc.method, tc.path, tc.body), tc.status)
		if p.Code != tc.code || !strings.Contains(p.Detail, tc.detail) {
			t.Errorf("%s %s %s: %s %q, want %s naming %q", tc.method, tc.path, tc.body, p.Code, p.Detail, tc.code, tc.detail)
		}
	}
	if list := e.call(t, "GET", "/v1/orgs/acme/invoices", ""); list.status != 200 || !strings.Contains(string(list.body), `"invoices":[]`) {
		t.Errorf("invoices of an org without customer: %d %s", list.status, list.body)
	}

	// A tenant reads its own invoices; nothing else of these routes.
	as := map[string]string{"Authorization": "Bearer " + e.paidRead, "Content-Type": "application/json"}
	if r := e.callWith(t, "GET", "/v1/orgs/paid/invoices", "", as); r.status != 200 {
		t.Errorf("tenant's own invoices: %d %s", r.status, r.body)
	}
	for _, tc := range []struct {
		method, path string
		code         reason.Code
	}{
		{"GET", "/v1/orgs/acme/invoices", reason.NotFound},
		{"POST", "/v1/orgs/paid/invoices", reason.RouteNotFound},
		{"GET", "/v1/coupons", reason.RouteNotFound},
		{"POST", "/v1/coupons", reason.RouteNotFound},
	} {
		if p := checkProblem(t, e.callWith(t, tc.method, tc.path, `{"items":[`+item+`]}`, as), 404); p.Code != tc.code {
			t.Errorf("tenant %s %s: %s, want %s", tc.method, tc.path, p.Code, tc.code)
		}
	}

	e.sm.Stop()
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/orgs/paid/invoices", `{"items":[` + item + `]}`},
		{"GET", "/v1/orgs/paid/invoices", ""},
		{"POST", "/v1/coupons", `{"code":"DOWN","percent_off":5,"duration":"once"}`},
		{"GET", "/v1/coupons", ""},
	} {
		if p := checkProblem(t, e.call(t, tc.method, tc.path, tc.body), http.StatusBadGateway); p.Code != reason.UpstreamUnavailable {
			t.Errorf("%s %s with Stripe down: %s", tc.method, tc.path, p.Code)
		}
	}

	bare, _ := newBillingEnv(t, billing.Config{}, nil)
	bare.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"free"}`)
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/orgs/acme/invoices", `{"items":[` + item + `]}`},
		{"GET", "/v1/orgs/acme/invoices", ""},
		{"POST", "/v1/coupons", `{"code":"X","percent_off":5,"duration":"once"}`},
		{"GET", "/v1/coupons", ""},
	} {
		if p := checkProblem(t, bare.call(t, tc.method, tc.path, tc.body), http.StatusServiceUnavailable); p.Code != reason.NotConfigured {
			t.Errorf("%s %s without Stripe: %s", tc.method, tc.path, p.Code)
		}
	}
}

// TestInvoiceCouponCLI: the invoice and coupon commands against the API.
func TestInvoiceCouponCLI(t *testing.T) {
	e := newStripeEnv(t)
	g := []string{"--addr", e.srv.URL, "--token", testToken}
	for _, tc := range []struct {
		args    []string
		code    int
		out     []string
		errText []string
	}{
		{[]string{"invoice", "create", "paid", "--item", "Setup fee:5000", "--item", "Migration: 12000", "--due", "14d"}, 0, []string{"ID", "AMOUNT-DUE", "in_"}, nil},
		{[]string{"invoice", "create", "paid", "--item", "Setup fee:5000"}, 0, []string{"in_"}, nil},
		{[]string{"invoice", "list", "paid"}, 0, []string{"NUMBER", "in_"}, nil},
		{[]string{"invoice", "create", "paid"}, 2, nil, []string{"--item"}},
		{[]string{"invoice", "create", "paid", "--item", "Setup fee"}, 2, nil, []string{"DESCRIPTION:AMOUNT"}},
		{[]string{"invoice", "create", "paid", "--item", "Setup fee:50.00"}, 2, nil, []string{"minor units"}},
		{[]string{"invoice", "create", "paid", "--item", "Setup fee:5000", "--due", "0d"}, 2, nil, []string{"--due"}},
		{[]string{"invoice", "create", "paid", "--item", "Refund:-5"}, 1, nil, []string{"Bad Request", "items[0].amount"}},
		{[]string{"invoice", "create", "acme", "--item", "Setup fee:5000"}, 1, nil, []string{"Conflict", "no Stripe customer"}},
		{[]string{"coupon", "create", "SPRING25", "--percent-off", "25", "--duration", "repeating", "--months", "3", "--max-redemptions", "100", "--expires", "30d"},
			0, []string{"CODE", "DISCOUNT", "REDEEMED"}, nil},
		{[]string{"coupon", "create", "WELCOME5", "--amount-off", "500", "--currency", "eur"}, 0, []string{"promo_"}, nil},
		{[]string{"coupon", "create", "X", "--percent-off", "25", "--expires", "soon"}, 2, nil, []string{"--expires"}},
		{[]string{"coupon", "create", "X"}, 1, nil, []string{"Bad Request", "percent_off or amount_off"}},
		{[]string{"coupon", "list"}, 0, []string{"CODE", "promo_"}, nil},
	} {
		code, out, errOut := runCLI(append(tc.args, g...)...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d (stdout %q, stderr %q)", tc.args, code, tc.code, out, errOut)
			continue
		}
		for _, s := range tc.out {
			if !strings.Contains(out, s) {
				t.Errorf("%v: stdout %q lacks %q", tc.args, out, s)
			}
		}
		for _, s := range tc.errText {
			if !strings.Contains(errOut, s) {
				t.Errorf("%v: stderr %q lacks %q", tc.args, errOut, s)
			}
		}
	}
}
