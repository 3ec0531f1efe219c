package billing

import (
	"strings"
	"testing"
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
