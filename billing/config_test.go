package billing

import (
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
)

func TestConfig(t *testing.T) {
	var c Config
	c.Defaults()
	if c.DefaultPlan != "free" || c.Validate() != nil {
		t.Fatalf("defaults: %+v, %v", c, c.Validate())
	}
	c.DefaultPlan = strings.Repeat("x", 64)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "billing.default_plan") {
		t.Fatalf("long plan name: %v", err)
	}
}

// TestPlanConfigRequestsPerSecond: [[billing.plans]] requests_per_second
// reaches the plan, and a negative one is named.
func TestPlanConfigRequestsPerSecond(t *testing.T) {
	for _, tc := range []struct {
		rps  int64
		want string // "": valid
	}{
		{0, ""},
		{200, ""},
		{-1, "billing.plans[0]: requests_per_second"},
	} {
		c := Config{Plans: []PlanConfig{{Name: "pro", RequestsPerSecond: tc.rps}}}
		c.Defaults()
		if got := c.Plans[0].Plan().RequestsPerSecond; got != tc.rps {
			t.Errorf("Plan().RequestsPerSecond = %d, want %d", got, tc.rps)
		}
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("requests_per_second %d: %v; want %q", tc.rps, err, tc.want)
		}
	}
}

// TestRenewalURL: renewal_url is empty or an absolute http(s) URL, with
// or without {org}.
func TestRenewalURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"", true},
		{"https://console.example/orgs/{org}/billing", true},
		{"http://console.example/billing?org={org}", true},
		{"https://console.example/billing", true},
		{"/orgs/{org}/billing", false},
		{"javascript:alert({org})", false},
		{"https://", false},
	} {
		var c Config
		c.Defaults()
		c.RenewalURL = tc.url
		err := c.Validate()
		if tc.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "billing.renewal_url") {
			t.Errorf("%q: %v; want ok %v", tc.url, err, tc.ok)
		}
	}
}

// TestPlanConfigPrice: the price_* keys make the plan's Price; a partial
// price is refused by name.
func TestPlanConfigPrice(t *testing.T) {
	p := PlanConfig{Name: "pro", PriceAmount: 1900, PriceCurrency: "eur", PriceInterval: "month"}.Plan()
	if p.Price == nil || *p.Price != (sites.Price{Amount: 1900, Currency: "eur", Interval: "month"}) {
		t.Fatalf("price %+v", p.Price)
	}
	if (PlanConfig{Name: "free"}).Plan().Price != nil {
		t.Fatal("a plan without price keys has a price")
	}
	cfg := Config{Plans: []PlanConfig{{Name: "pro", PriceAmount: 1900}}}
	cfg.Defaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "price.currency") {
		t.Fatalf("a partial price: %v", err)
	}
}
