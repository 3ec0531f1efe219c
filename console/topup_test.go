package console_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/console"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
)

// sessionRecorder keeps the forms of the Checkout sessions Stripe is
// asked for.
type sessionRecorder struct {
	mu    sync.Mutex
	forms []url.Values
}

func (r *sessionRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.URL.Path == "/v1/checkout/sessions" && req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		form, _ := url.ParseQuery(string(b))
		r.mu.Lock()
		r.forms = append(r.forms, form)
		r.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(req)
}

func (r *sessionRecorder) take() []url.Values {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.forms
	r.forms = nil
	return out
}

// newTopUpFixture is the fixture with real top-ups: Stripe (stripe-mock)
// over the fixture's billing and its ledger in EUR.
func newTopUpFixture(t *testing.T) (*fixture, *stripetest.Mock, *sessionRecorder) {
	t.Helper()
	sm := stripetest.Start(t)
	rec := &sessionRecorder{}
	f := newFixtureWith(t, func(o *console.Options, bill *billing.Billing) {
		cfg := billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: "whsec_test", WebhookHost: "billing.test", APIBase: sm.URL(),
			CheckoutSuccessURL: "https://console.test/paid", CheckoutCancelURL: "https://console.test/credit"}
		s, err := stripe.New(cfg, stripe.Options{Accounts: bill, Store: storetest.Open(t), Metrics: prometheus.NewRegistry(), Plans: bill,
			Credits: bill, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		o.TopUps = s
	})
	return f, sm, rec
}

// TestCreditTopUp: the credit page's top-up form, for a token with the
// billing scope only; an amount typed in euros goes to a Stripe Checkout
// session (stripe-mock) in cents and the answer is a 303 to it; a bad
// amount, one TopUp refuses and Stripe down show the credit page again
// with the reason.
func TestCreditTopUp(t *testing.T) {
	f, sm, rec := newTopUpFixture(t)
	b := f.browser(t)
	csrf := b.signIn(tokAdmin)
	_, body := b.get("/console/credit")
	for _, want := range []string{`action="/console/credit/top-up"`, `name="csrf" value="` + csrf + `"`, `name="amount"`, "Amount (EUR)",
		"Balance: <strong>37.66 EUR</strong>"} {
		if !strings.Contains(body, want) {
			t.Errorf("credit page lacks %q:\n%s", want, body)
		}
	}

	for _, tc := range []struct{ typed, cents string }{{"25", "2500"}, {"25.50", "2550"}, {" 0,75 ", "75"}, {"7.5", "750"}} {
		resp, body := b.do(http.MethodPost, "/console/credit/top-up", url.Values{"csrf": {csrf}, "amount": {tc.typed}}, nil)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "https://") {
			t.Fatalf("top-up %q: %d %q\n%s", tc.typed, resp.StatusCode, loc, body)
		}
		forms := rec.take()
		if len(forms) != 1 {
			t.Fatalf("top-up %q: %d sessions", tc.typed, len(forms))
		}
		for k, want := range map[string]string{"mode": "payment", "client_reference_id": "acme", "line_items[0][price_data][currency]": "eur",
			"line_items[0][price_data][unit_amount]": tc.cents, "metadata[tollgate_credit]": "top_up"} {
			if got := forms[0].Get(k); got != want {
				t.Errorf("top-up %q: session %s = %q, want %q", tc.typed, k, got, want)
			}
		}
	}

	for _, tc := range []struct {
		typed  string
		status int
		msg    string
	}{
		{"", 400, "up to two decimals"},
		{"abc", 400, "up to two decimals"},
		{"25.505", 400, "up to two decimals"},
		{"-5", 400, "up to two decimals"},
		{"1e3", 400, "up to two decimals"},
		{"25.", 400, "up to two decimals"},
		{"99999999999999999999", 400, "too large"},
		{"0", 400, "This amount cannot be paid: amount: 0 must be between 1 and"},
		{"10000000000001", 400, "This amount cannot be paid: amount: 1000000000000100 must be between 1 and"},
	} {
		resp, body := b.do(http.MethodPost, "/console/credit/top-up", url.Values{"csrf": {csrf}, "amount": {tc.typed}}, nil)
		if resp.StatusCode != tc.status || !regexp.MustCompile(`id="top-up-error">[^<]*`+regexp.QuoteMeta(tc.msg)).MatchString(body) {
			t.Errorf("amount %q: %d, want %d with %q\n%s", tc.typed, resp.StatusCode, tc.status, tc.msg, body)
		}
		if !strings.Contains(body, `value="`+tc.typed+`"`) || !strings.Contains(body, "37.66 EUR") {
			t.Errorf("amount %q: the page does not show the balance and the amount typed again", tc.typed)
		}
	}
	if forms := rec.take(); len(forms) != 0 {
		t.Errorf("refused amounts asked Stripe for %d sessions", len(forms))
	}
	if resp, _ := b.do(http.MethodPost, "/console/credit/top-up", url.Values{"amount": {"25"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("without the CSRF token: %d", resp.StatusCode)
	}

	sm.Stop()
	resp, body := b.do(http.MethodPost, "/console/credit/top-up", url.Values{"csrf": {csrf}, "amount": {"25"}}, nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "The payment provider could not be reached") || !strings.Contains(body, "37.66 EUR") {
		t.Errorf("Stripe down: %d\n%s", resp.StatusCode, body)
	}
}

// TestCreditTopUpHidden: no top-up form without the billing scope (a note
// says why, and a POST is refused) nor without top-ups configured.
func TestCreditTopUpHidden(t *testing.T) {
	f, _, _ := newTopUpFixture(t)
	b := f.browser(t)
	csrf := b.signIn(tokRead)
	_, body := b.get("/console/credit")
	if strings.Contains(body, "/console/credit/top-up") || !strings.Contains(body, "Topping up needs a token with the <code>billing</code> scope") {
		t.Errorf("read-only token's credit page:\n%s", body)
	}
	if resp, _ := b.do(http.MethodPost, "/console/credit/top-up", url.Values{"csrf": {csrf}, "amount": {"25"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("read-only token's top-up: %d, want 403", resp.StatusCode)
	}

	plain := newFixture(t) // no TopUps
	b = plain.browser(t)
	csrf = b.signIn(tokAdmin)
	_, body = b.get("/console/credit")
	if strings.Contains(body, "Top up") || strings.Contains(body, "billing</code> scope") || !strings.Contains(body, "37.66 EUR") {
		t.Errorf("credit page without top-ups:\n%s", body)
	}
	if resp, _ := b.do(http.MethodPost, "/console/credit/top-up", url.Values{"csrf": {csrf}, "amount": {"25"}}, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("top-up without top-ups: %d, want 404", resp.StatusCode)
	}
}
