// Package billing decides what an org may use: plans, account states and
// enforcement (allow, throttle, block), and talks to Stripe. So far it holds
// its configuration; enforcement and Stripe arrive with the billing issue.
package billing

import "fmt"

// Config is the [billing] section.
type Config struct {
	// DefaultPlan is the plan of synthetic orgs (Gitea owners no org claimed)
	// and of orgs whose subscription is cancelled. It must exist when used;
	// the built-in "free" plan always does unless deleted. Default "free".
	DefaultPlan string `toml:"default_plan"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.DefaultPlan == "" {
		c.DefaultPlan = "free"
	}
}

// Validate names every bad key of [billing].
func (c Config) Validate() error {
	if c.DefaultPlan == "" || len(c.DefaultPlan) > 63 {
		return fmt.Errorf("billing.default_plan: %q must be a plan name", c.DefaultPlan)
	}
	return nil
}
