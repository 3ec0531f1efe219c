package admin

import (
	"context"
	"encoding/csv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// TestCreditRoutes: operator grants through a real Billing and ledger on
// bbolt, exactly once per source; the history as JSON and CSV; refusals.
func TestCreditRoutes(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := credit.New(credit.Config{Store: store.NewBoltCredit(st), Currency: "eur"})
	if err != nil {
		t.Fatal(err)
	}
	bill, err := billing.New(ctx, billing.Config{}, billing.Options{Sites: reg, Store: st, Credits: ledger, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Token: testToken}, reg, Options{Metrics: prometheus.NewRegistry(), Accounts: bill, Credits: bill,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	e := &testEnv{srv: srv, reg: reg}
	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"free"}`)

	steps := []struct {
		body     string
		status   int
		appended bool
		balance  int64
	}{
		{`{"amount":5000,"source":"req-1","note":"welcome"}`, http.StatusCreated, true, 5000},
		{`{"amount":5000,"source":"req-1"}`, http.StatusOK, false, 5000}, // sent again
		{`{"amount":-1200,"kind":"expiry","source":"req-2"}`, http.StatusCreated, true, 3800},
		{`{"amount":300,"kind":"refund"}`, http.StatusCreated, true, 4100}, // source generated
	}
	for _, s := range steps {
		var res CreditResult
		e.must(t, s.status, "POST", "/v1/orgs/acme/credits", s.body).json(t, &res)
		if res.Appended != s.appended || res.Balance != s.balance || res.Currency != "eur" || res.Entry.ID == "" {
			t.Fatalf("%s: %+v", s.body, res)
		}
	}
	for _, tc := range []struct {
		path, body string
		status     int
	}{
		{"/v1/orgs/acme/credits", `{"amount":100,"kind":"usage"}`, http.StatusBadRequest},
		{"/v1/orgs/acme/credits", `{"amount":100,"kind":"top_up"}`, http.StatusBadRequest},
		{"/v1/orgs/acme/credits", `{"amount":-100}`, http.StatusBadRequest},
		{"/v1/orgs/acme/credits", `{"amount":0}`, http.StatusBadRequest},
		{"/v1/orgs/nobody/credits", `{"amount":100}`, http.StatusNotFound},
		{"/v1/orgs/acme/credits/checkout", `{"amount":100}`, http.StatusServiceUnavailable}, // no Stripe
	} {
		checkProblem(t, e.call(t, "POST", tc.path, tc.body), tc.status)
	}

	var h CreditHistory
	e.must(t, http.StatusOK, "GET", "/v1/orgs/acme/credits", "").json(t, &h)
	if h.Balance != 4100 || len(h.Entries) != 3 || h.Entries[2].Balance != 4100 || h.Entries[0].Note != "welcome" {
		t.Fatalf("history %+v", h)
	}
	r := e.call(t, "GET", "/v1/orgs/acme/credits?format=csv", "")
	rows, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
	if err != nil || r.status != 200 || len(rows) != 4 || rows[0][0] != "id" || rows[2][2] != "expiry" || rows[3][4] != "4100" {
		t.Fatalf("csv %d %q: %v", r.status, r.body, err)
	}
	checkProblem(t, e.call(t, "GET", "/v1/orgs/nobody/credits", ""), http.StatusNotFound)
}
