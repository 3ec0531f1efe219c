package admin

import (
	"net/http"
	"testing"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestPlanPrices: a plan's price is set through the API and the CLI's
// parser, shown in the public catalog without a token, and refused when
// malformed.
func TestPlanPrices(t *testing.T) {
	e, _ := newBillingEnv(t, billing.Config{}, nil)
	e.must(t, http.StatusCreated, "PUT", "/v1/plans/pro", `{"sites":10,"public":true,"price":{"amount":1900,"currency":"eur","interval":"month"}}`)
	var list PlanList
	r := e.callWith(t, "GET", "/v1/plans", "", nil) // no token: the public catalog
	if r.status != http.StatusOK {
		t.Fatalf("the catalog without a token: %d %s", r.status, r.body)
	}
	r.json(t, &list)
	var pro *sites.Plan
	for i := range list.Plans {
		if list.Plans[i].Name == "pro" {
			pro = &list.Plans[i]
		}
	}
	if pro == nil || pro.Price == nil || *pro.Price != (sites.Price{Amount: 1900, Currency: "eur", Interval: "month"}) {
		t.Fatalf("the catalog without a token: %+v", list.Plans)
	}
	checkProblem(t, e.call(t, "PUT", "/v1/plans/bad", `{"price":{"amount":1900,"currency":"EURO","interval":"month"}}`), http.StatusUnprocessableEntity)

	for _, tc := range []struct {
		in   string
		want sites.Price
		ok   bool
	}{
		{"1900 eur/month", sites.Price{Amount: 1900, Currency: "eur", Interval: "month"}, true},
		{"19000 USD/year", sites.Price{Amount: 19000, Currency: "usd", Interval: "year"}, true},
		{"19.00 eur/month", sites.Price{}, false},
		{"1900 eur", sites.Price{}, false},
		{"1900 eur/week", sites.Price{}, false},
	} {
		got, err := parsePrice(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parsePrice(%q) = %+v, %v", tc.in, got, err)
		}
	}
}
