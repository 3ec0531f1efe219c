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
