package admin

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/store"
)

// lateBilling is a Billing set after the tenant env made its registry.
type lateBilling struct{ *billing.Billing }

// newCodeEnv is the tenant env with a real Billing and ledger on its
// bbolt file, in euros, on the env's clock.
func newCodeEnv(t *testing.T) (*tenantEnv, *credit.Ledger) {
	t.Helper()
	lb := &lateBilling{}
	e := newTenantEnvWith(t, func(o *Options) { o.Credits, o.CreditCodes = lb, lb })
	cs := store.NewBoltCredit(e.st)
	ledger, err := credit.New(credit.Config{Store: cs, Currency: "eur"})
	if err != nil {
		t.Fatal(err)
	}
	lb.Billing, err = billing.New(context.Background(), billing.Config{Currency: "eur"}, billing.Options{Sites: e.reg, Store: e.st,
		Credits: ledger, Codes: cs, Metrics: prometheus.NewRegistry(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e, ledger
}

// TestCreditCodeRoutes: the operator makes, lists and withdraws credit
// codes; tenants redeem them on the API listener, once per org, within the
// code's bound and expiry, with the CREDIT_CODE_* problems otherwise.
func TestCreditCodeRoutes(t *testing.T) {
	e, ledger := newCodeEnv(t)
	var c credit.Code
	e.admin.must(t, http.StatusCreated, "POST", "/v1/credit-codes", `{"code":"welcome-25","amount":2500,"max_redemptions":2,"note":"launch"}`).json(t, &c)
	if c.Code != "WELCOME-25" || c.Amount != 2500 || c.MaxRedemptions != 2 || c.Redeemed != 0 {
		t.Fatalf("created %+v", c)
	}
	soon := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
	e.admin.must(t, http.StatusCreated, "POST", "/v1/credit-codes", `{"code":"SOON","amount":100,"expires_at":"`+soon+`"}`)
	e.admin.must(t, http.StatusCreated, "POST", "/v1/credit-codes", `{"code":"LEAKED","amount":100}`)
	e.admin.must(t, http.StatusOK, "DELETE", "/v1/credit-codes/leaked", "").json(t, &c)
	if !c.Disabled {
		t.Fatalf("withdrawn code %+v", c)
	}

	var res RedeemResult
	e.as(t, e.api, "all", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"Welcome-25"}`).json(t, &res)
	if res.Code != "WELCOME-25" || res.Amount != 2500 || res.Balance != 2500 || res.Currency != "eur" ||
		res.Entry.Actor != billing.ActorTenant || res.Entry.Source != "code:WELCOME-25" {
		t.Fatalf("redemption %+v", res)
	}
	e.as(t, e.admin, "admin", "POST", "/v1/orgs/beta/credits/redeem", `{"code":"welcome-25"}`).json(t, &res)
	if res.Balance != 2500 || res.Entry.Actor != billing.ActorOperator {
		t.Fatalf("operator's redemption for beta %+v", res)
	}
	e.admin.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"gamma","plan":"one"}`)
	e.clock.Add(2 * time.Hour)

	for _, tc := range []struct {
		name, token, method, path, body string
		status                          int
		code                            reason.Code
	}{
		{"again", "all", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"WELCOME-25"}`, 409, reason.CreditCodeAlreadyRedeemed},
		{"used up", "admin", "POST", "/v1/orgs/gamma/credits/redeem", `{"code":"WELCOME-25"}`, 409, reason.CreditCodeUsedUp},
		{"expired", "all", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"SOON"}`, 422, reason.CreditCodeExpired},
		{"withdrawn", "all", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"LEAKED"}`, 422, reason.CreditCodeInvalid},
		{"unknown", "all", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"GUESS-1234"}`, 422, reason.CreditCodeInvalid},
		{"malformed", "all", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"<script>"}`, 422, reason.CreditCodeInvalid},
		{"no body", "all", "POST", "/v1/orgs/acme/credits/redeem", `{"code":`, 400, reason.BadRequest},
		{"read scope", "read", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"SOON"}`, 403, reason.InsufficientScope},
		{"other org", "beta", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"SOON"}`, 404, reason.NotFound},
		{"tenant makes codes", "all", "POST", "/v1/credit-codes", `{"code":"FREE-MONEY","amount":1}`, 404, reason.RouteNotFound},
		{"tenant lists codes", "all", "GET", "/v1/credit-codes", "", 404, reason.RouteNotFound},
		{"taken", "admin", "POST", "/v1/credit-codes", `{"code":"soon","amount":1}`, 409, reason.Conflict},
		{"bad code", "admin", "POST", "/v1/credit-codes", `{"code":"10% off","amount":1}`, 422, reason.Invalid},
		{"no amount", "admin", "POST", "/v1/credit-codes", `{"code":"NOTHING"}`, 422, reason.Invalid},
		{"past expiry", "admin", "POST", "/v1/credit-codes", `{"code":"OLD1","amount":1,"expires_at":"2020-01-01T00:00:00Z"}`, 422, reason.Invalid},
		{"withdraw unknown", "admin", "DELETE", "/v1/credit-codes/NOPE", "", 404, reason.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := e.api
			if tc.token == "admin" {
				env = e.admin
			}
			if p := checkProblem(t, e.as(t, env, tc.token, tc.method, tc.path, tc.body), tc.status); p.Code != tc.code {
				t.Fatalf("code %s, want %s (%+v)", p.Code, tc.code, p)
			}
		})
	}

	var list CreditCodeList
	e.admin.must(t, http.StatusOK, "GET", "/v1/credit-codes", "").json(t, &list)
	got := map[string]credit.Code{}
	for _, c := range list.Codes {
		got[c.Code] = c
	}
	if len(list.Codes) != 3 || got["WELCOME-25"].Redeemed != 2 || got["SOON"].Redeemed != 0 || !got["LEAKED"].Disabled || list.Currency != "eur" {
		t.Fatalf("listed %+v", list)
	}
	for org, want := range map[string]int64{"acme": 2500, "beta": 2500, "gamma": 0} {
		if bal, _ := ledger.Balance(context.Background(), org); bal != want {
			t.Errorf("%s: balance %d, want %d", org, bal, want)
		}
	}
}

// TestCreditCodeGuessing: a tenant trying codes for its org is refused
// (429 RATE_LIMITED, Retry-After) after billing.CodeTriesBurst tries, whether they
// were refused or not; another org and the operator are not.
func TestCreditCodeGuessing(t *testing.T) {
	e, _ := newCodeEnv(t)
	e.admin.must(t, http.StatusCreated, "POST", "/v1/credit-codes", `{"code":"REAL-CODE-1","amount":100}`)
	for i := range billing.CodeTriesBurst {
		checkProblem(t, e.as(t, e.api, "all", "POST", "/v1/orgs/acme/credits/redeem", fmt.Sprintf(`{"code":"GUESS-%04d"}`, i)), 422)
	}
	r := e.as(t, e.api, "all", "POST", "/v1/orgs/acme/credits/redeem", `{"code":"REAL-CODE-1"}`)
	if p := checkProblem(t, r, http.StatusTooManyRequests); p.Code != reason.RateLimited || r.header.Get("Retry-After") != "10" {
		t.Fatalf("try %d: %+v, Retry-After %q", billing.CodeTriesBurst+1, p, r.header.Get("Retry-After"))
	}
	for who, env := range map[string]*testEnv{"beta": e.api, "admin": e.admin} {
		org := map[string]string{"beta": "beta", "admin": "acme"}[who]
		if r := e.as(t, env, who, "POST", "/v1/orgs/"+org+"/credits/redeem", `{"code":"REAL-CODE-1"}`); r.status != http.StatusCreated {
			t.Fatalf("%s redeeming for %s while acme's tenant is limited: %d %s", who, org, r.status, r.body)
		}
	}
}
