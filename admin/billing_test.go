package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestAccountThroughBilling: PATCH of state, plan and Stripe customer goes
// through billing (recorded with the operator as actor, listed by
// /events); bad values are clear problems.
func TestAccountThroughBilling(t *testing.T) {
	e, bill := newBillingEnv(t, billing.Config{}, nil)
	reg := e.reg

	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"free"}`)
	e.must(t, http.StatusOK, "PATCH", "/v1/orgs/acme", `{"state":"suspended","stripe_customer":"cus_123","name":"Acme"}`)
	o := reg.Snapshot().Orgs.Get("acme")
	if o.State != sites.StateSuspended || o.StripeCustomer != "cus_123" || o.Name != "Acme" {
		t.Fatalf("after PATCH: %+v", o)
	}
	if bill.Gate("acme").Decision() != access.BlockSuspended {
		t.Fatal("suspension not enforced at once")
	}
	var evs OrgEvents
	e.must(t, http.StatusOK, "GET", "/v1/orgs/acme/events", "").json(t, &evs)
	// Creation (plan, state), then the PATCH (customer, state).
	if len(evs.Events) != 4 || evs.Events[0].Field != "plan" || evs.Events[0].To != "free" || evs.Events[3].Actor != billing.ActorOperator {
		t.Fatalf("events: %+v", evs.Events)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"PATCH", "/v1/orgs/acme", `{"state":"bogus"}`, http.StatusUnprocessableEntity},
		{"PATCH", "/v1/orgs/acme", `{"state":""}`, http.StatusUnprocessableEntity},
		{"PATCH", "/v1/orgs/acme", `{"plan":"nope"}`, http.StatusUnprocessableEntity},
		{"PATCH", "/v1/orgs/acme", `{"stripe_customer":"not-a-customer"}`, http.StatusUnprocessableEntity},
		{"PATCH", "/v1/orgs/nobody", `{"state":"active"}`, http.StatusNotFound},
		{"GET", "/v1/orgs/nobody/events", "", http.StatusNotFound},
	} {
		checkProblem(t, e.call(t, tc.method, tc.path, tc.body), tc.status)
	}
	// Unlinking the customer.
	e.must(t, http.StatusOK, "PATCH", "/v1/orgs/acme", `{"stripe_customer":""}`)
	if reg.Snapshot().Orgs.Get("acme").StripeCustomer != "" {
		t.Fatal("customer not unlinked")
	}
}

// newBillingEnv is the admin API over a real registry on bbolt and a real
// Billing configured with cfg (now: its clock; nil, the wall clock).
func newBillingEnv(t *testing.T, cfg billing.Config, now func() time.Time) (*testEnv, *billing.Billing) {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	bill, err := billing.New(ctx, cfg, billing.Options{Sites: reg, Store: st, Metrics: prometheus.NewRegistry(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Token: testToken}, reg, Options{Metrics: prometheus.NewRegistry(), Accounts: bill,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &testEnv{srv: srv, reg: reg}, bill
}
