package admin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
)

// TestReservedDomains: tollgate's own hostnames (the pages domain and every
// name under it, the Stripe webhook host) cannot be attached to a tenant's
// site: 409 with a problem of type urn:tollgate:problem:reserved that names
// the config key. Names that only look alike are attached as usual.
func TestReservedDomains(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	e.must(t, http.StatusCreated, "PUT", "/v1/plans/many", `{}`) // no domain limit
	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"many"}`)
	e.must(t, http.StatusCreated, "POST", "/v1/orgs/acme/sites", `{"id":"www","source":{"type":"upstream","url":"http://127.0.0.1:9"}}`)
	if _, err := e.reg.Reserve(
		sites.ReservedName{Name: "Pages.Example", Subdomains: true, Key: "sites.pages_domain"},
		sites.ReservedName{Name: "billing.example", Key: "billing.stripe.webhook_host"},
		sites.ReservedName{Name: "", Key: "unset"},
	); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		domain string
		key    string // the config key the problem names; "" means attached (201)
	}{
		{"pages.example", "sites.pages_domain"},
		{"alice.pages.example", "sites.pages_domain"},
		{"Alice.Pages.Example.", "sites.pages_domain"},
		{"blog.alice.pages.example", "sites.pages_domain"},
		{"billing.example", "billing.stripe.webhook_host"},
		{"BILLING.example", "billing.stripe.webhook_host"},
		{"sub.billing.example", ""}, // the webhook host is reserved, not its subdomains
		{"notpages.example", ""},
		{"pages.example.net", ""},
		{"example", ""},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			r := e.call(t, "POST", "/v1/sites/www/domains", `{"domain":"`+tt.domain+`"}`)
			if tt.key == "" {
				if r.status != http.StatusCreated {
					t.Fatalf("status %d, want 201; body %s", r.status, r.body)
				}
				return
			}
			p := checkProblem(t, r, http.StatusConflict)
			if p.Type != ProblemTypeReserved || !strings.Contains(p.Detail, tt.key) {
				t.Fatalf("problem %+v; want type %s naming %s", p, ProblemTypeReserved, tt.key)
			}
			if _, err := e.reg.Domain(tt.domain); err == nil {
				t.Fatalf("%s was attached anyway", tt.domain)
			}
		})
	}
}
