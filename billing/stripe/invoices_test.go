package stripe

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// apiRecorder keeps every request it passes on, in order, and answers
// Stripe's invalid_request_error for "METHOD /path-prefix" in fail instead
// of passing it on.
type apiRecorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	reqs []apiRequest
	fail map[string]bool
}

type apiRequest struct {
	method, path string
	form         url.Values
	key          string // the Idempotency-Key header
}

func (r *apiRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	form := req.URL.Query()
	if req.Body != nil && req.Method != http.MethodGet {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		form, _ = url.ParseQuery(string(b))
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, apiRequest{req.Method, req.URL.Path, form, req.Header.Get("Idempotency-Key")})
	failing := false
	for k := range r.fail {
		if m, p, _ := strings.Cut(k, " "); m == req.Method && strings.HasPrefix(req.URL.Path, p) {
			failing = true
		}
	}
	r.mu.Unlock()
	if failing {
		body := `{"error":{"type":"invalid_request_error","message":"This promotion code already exists."}}`
		return &http.Response{StatusCode: 400, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
	}
	return r.base.RoundTrip(req)
}

// take returns the requests recorded since the last take, as "METHOD path"
// (ids replaced by {id}), and their forms.
func (r *apiRecorder) take() ([]string, []url.Values) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	var forms []url.Values
	for _, q := range r.reqs {
		parts := strings.Split(q.path, "/")
		for i, p := range parts {
			if i >= 3 && p != "" && p != "finalize" && p != "send" {
				parts[i] = "{id}"
			}
		}
		names = append(names, q.method+" "+strings.Join(parts, "/"))
		forms = append(forms, q.form)
	}
	r.reqs = nil
	return names, forms
}

// keys returns the Idempotency-Key headers of the requests recorded since
// the last take ("" for none), without taking them.
func (r *apiRecorder) keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs {
		out = append(out, q.key)
	}
	return out
}

// newAPIStripe is a Stripe on stripe-mock whose requests rec records.
func newAPIStripe(t *testing.T, sm *stripetest.Mock, rec *apiRecorder) *Stripe {
	t.Helper()
	cfg := billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test", APIBase: sm.URL()}
	return newTestStripe(t, cfg, Options{Accounts: newStripeAccounts(), Store: storetest.Open(t), Plans: fakePlans{},
		HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}})
}

// TestOperatorInvoices against stripe-mock: a draft that takes no pending
// items, each item created on it, finalized and (with due days) sent;
// without due days charged automatically and not sent; the list of the
// customer's invoices; clear refusals.
func TestOperatorInvoices(t *testing.T) {
	sm := stripetest.Start(t)
	rec := &apiRecorder{base: http.DefaultTransport}
	s := newAPIStripe(t, sm, rec)
	ctx := context.Background()
	items := []InvoiceItem{{Description: "Setup fee", Amount: 5000}, {Description: "Migration", Amount: 12000}}

	for _, tc := range []struct {
		name   string
		due    int
		method string
		calls  []string
	}{
		{"sent, due in 14 days", 14, "send_invoice", []string{"POST /v1/invoices", "POST /v1/invoiceitems", "POST /v1/invoiceitems",
			"POST /v1/invoices/{id}/finalize", "POST /v1/invoices/{id}/send"}},
		{"charged automatically", 0, "charge_automatically", []string{"POST /v1/invoices", "POST /v1/invoiceitems", "POST /v1/invoiceitems",
			"POST /v1/invoices/{id}/finalize"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := s.CreateInvoice(ctx, "paying", InvoiceRequest{Items: items, DueDays: tc.due})
			if err != nil {
				t.Fatal(err)
			}
			// stripe-mock answers fixtures: a draft without URLs.
			if inv.ID == "" || inv.Sent != (tc.due > 0) {
				t.Fatalf("invoice %+v", inv)
			}
			calls, forms := rec.take()
			if strings.Join(calls, ", ") != strings.Join(tc.calls, ", ") {
				t.Fatalf("calls %v, want %v", calls, tc.calls)
			}
			draft := forms[0]
			for k, want := range map[string]string{"customer": "cus_paying", "collection_method": tc.method,
				"pending_invoice_items_behavior": "exclude", "auto_advance": "true", "metadata[tollgate_org]": "paying"} {
				if got := draft.Get(k); got != want {
					t.Errorf("draft %s = %q, want %q", k, got, want)
				}
			}
			if due := draft.Get("days_until_due"); (tc.due > 0) != (due == "14") {
				t.Errorf("draft days_until_due = %q", due)
			}
			for i, it := range items {
				f := forms[1+i]
				if f.Get("invoice") == "" || f.Get("customer") != "cus_paying" || f.Get("description") != it.Description ||
					f.Get("amount") != map[int]string{0: "5000", 1: "12000"}[i] {
					t.Errorf("item %d: %v", i, f)
				}
			}
		})
	}

	list, err := s.Invoices(ctx, "paying")
	if err != nil || len(list) == 0 || list[0].ID == "" {
		t.Fatalf("invoices: %+v, %v", list, err)
	}
	if calls, forms := rec.take(); len(calls) != 1 || calls[0] != "GET /v1/invoices" || forms[0].Get("customer") != "cus_paying" || forms[0].Get("limit") != "100" {
		t.Fatalf("list calls %v %v", calls, forms)
	}
	if list, err := s.Invoices(ctx, "acme"); err != nil || len(list) != 0 {
		t.Fatalf("invoices of an org without customer: %+v, %v", list, err)
	}

	for _, tc := range []struct {
		name string
		org  string
		r    InvoiceRequest
		want error
	}{
		{"no customer", "acme", InvoiceRequest{Items: items}, ErrNoInvoiceCustomer},
		{"no such org", "nobody", InvoiceRequest{Items: items}, sites.ErrNotFound},
		{"no items", "paying", InvoiceRequest{}, sites.ErrInvalid},
	} {
		if _, err := s.CreateInvoice(ctx, tc.org, tc.r); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if calls, _ := rec.take(); len(calls) != 0 {
		t.Fatalf("refused invoices called Stripe: %v", calls)
	}

	// An item Stripe refuses: the draft and the items made are deleted.
	rec.fail = map[string]bool{"POST /v1/invoiceitems": true}
	if _, err := s.CreateInvoice(ctx, "paying", InvoiceRequest{Items: items}); !errors.Is(err, sites.ErrInvalid) {
		t.Fatalf("refused item: %v", err)
	}
	if calls, _ := rec.take(); strings.Join(calls, ", ") != "POST /v1/invoices, POST /v1/invoiceitems, DELETE /v1/invoices/{id}" {
		t.Fatalf("calls of a refused item: %v", calls)
	}
	rec.fail = nil

	sm.Stop()
	if _, err := s.CreateInvoice(ctx, "paying", InvoiceRequest{Items: items}); !errors.Is(err, ErrUpstream) {
		t.Errorf("with Stripe down: %v", err)
	}
	if _, err := s.Invoices(ctx, "paying"); !errors.Is(err, ErrUpstream) {
		t.Errorf("list with Stripe down: %v", err)
	}
}

func TestInvoiceRequestValidate(t *testing.T) {
	ok := InvoiceItem{Description: "Setup fee", Amount: 5000}
	for _, tc := range []struct {
		name string
		r    InvoiceRequest
		keys []string // fields the error names; none: valid
	}{
		{"valid", InvoiceRequest{Items: []InvoiceItem{ok}, DueDays: 14, Currency: "eur"}, nil},
		{"charged automatically", InvoiceRequest{Items: []InvoiceItem{ok}}, nil},
		{"no items", InvoiceRequest{}, []string{"items"}},
		{"too many items", InvoiceRequest{Items: make([]InvoiceItem, MaxInvoiceItems+1)}, []string{"items: at most"}},
		{"negative amount", InvoiceRequest{Items: []InvoiceItem{ok, {Description: "refund", Amount: -5}}}, []string{"items[1].amount"}},
		{"zero amount", InvoiceRequest{Items: []InvoiceItem{{Description: "x"}}}, []string{"items[0].amount"}},
		{"blank description", InvoiceRequest{Items: []InvoiceItem{{Description: "  ", Amount: 1}}}, []string{"items[0].description"}},
		{"negative due", InvoiceRequest{Items: []InvoiceItem{ok}, DueDays: -1}, []string{"due_days"}},
		{"due too far", InvoiceRequest{Items: []InvoiceItem{ok}, DueDays: 366}, []string{"due_days"}},
		{"bad currency", InvoiceRequest{Items: []InvoiceItem{ok}, Currency: "euro"}, []string{"currency"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			if len(tc.keys) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, k := range tc.keys {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("%q does not name %s", err, k)
				}
			}
		})
	}
}

// TestOperatorInvoiceEvents: the events of an operator invoice (no
// subscription, send_invoice, metadata tollgate_org) drive the lifecycle
// like a subscription invoice's, through real Billing: a failed payment
// starts the grace period, the payment ends it; redelivered or out of
// order they change nothing.
func TestOperatorInvoiceEvents(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	rec := &hookRecorder{}
	bill, err := billing.New(ctx, billing.Config{Plans: []billing.PlanConfig{{Name: "pro", GracePeriod: 72 * time.Hour}}},
		billing.Options{Sites: reg, Store: st, Hooks: rec, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "pro", State: sites.StateActive, StripeCustomer: "cus_acme"}); err != nil {
		t.Fatal(err)
	}
	f := &stripeFixture{st: st}
	f.s = newTestStripe(t, billing.StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"}, Options{Accounts: bill, Store: st})
	f.srv = httptest.NewServer(f.s)
	t.Cleanup(f.srv.Close)

	invoice := `{"id":"in_op","object":"invoice","customer":"cus_acme","subscription":null,"collection_method":"send_invoice",` +
		`"billing_reason":"manual","metadata":{"tollgate_org":"acme"}}`
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, step := range []struct {
		id, typ, state string
		hooks          []string
	}{
		{"evt_fail", "invoice.payment_failed", sites.StatePastDue, []string{"payment.failed", "grace.started"}},
		{"evt_paid", "invoice.paid", sites.StateActive, []string{"payment.failed", "grace.started", "grace.ended", "payment.succeeded", "org.restored"}},
	} {
		t0 = t0.Add(time.Minute)
		if code, out := f.deliver(t, step.id, step.typ, t0, invoice); code != 200 || out != "applied" {
			t.Fatalf("%s: %d %s", step.typ, code, out)
		}
		if o := reg.Snapshot().Orgs.Get("acme"); o.State != step.state {
			t.Fatalf("after %s: state %s, want %s", step.typ, o.State, step.state)
		}
		var types []string
		for _, e := range rec.emitted() {
			types = append(types, e.Type)
		}
		if strings.Join(types, ",") != strings.Join(step.hooks, ",") {
			t.Fatalf("after %s: hooks %v, want %v", step.typ, types, step.hooks)
		}
	}
	// Redelivered, the payment changes nothing; a failure older than it
	// (delivered out of order) is stale: the org stays active, no hook.
	hooks := len(rec.emitted())
	if code, out := f.deliver(t, "evt_paid", "invoice.paid", t0, invoice); code != 200 || out != "duplicate" {
		t.Fatalf("invoice.paid redelivered: %d %s", code, out)
	}
	if code, out := f.deliver(t, "evt_fail_old", "invoice.payment_failed", t0.Add(-30*time.Second), invoice); code != 200 || out != "stale" {
		t.Fatalf("an older payment_failed after invoice.paid: %d %s, want stale", code, out)
	}
	if o := reg.Snapshot().Orgs.Get("acme"); o.State != sites.StateActive || len(rec.emitted()) != hooks {
		t.Fatalf("after the redelivery and the stale failure: state %s, %d hooks (want active, %d)", o.State, len(rec.emitted()), hooks)
	}
}
