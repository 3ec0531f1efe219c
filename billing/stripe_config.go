package billing

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// StripeConfig is the [billing.stripe] section. Stripe is off unless
// secret_key or webhook_secret is set.
type StripeConfig struct {
	// SecretKey is the API key (sk_… or a restricted rk_… allowed to write
	// billing meter events), already resolved from env:/file: by the
	// caller. Without it no overage is reported; webhooks still work.
	SecretKey string `toml:"secret_key"`
	// WebhookSecret is the signing secret of the webhook endpoint (whsec_…)
	// that every delivery's Stripe-Signature is checked with. Required when
	// Stripe is on.
	WebhookSecret string `toml:"webhook_secret"`
	// WebhookHost is the public hostname the webhook is served on (e.g.
	// "billing.example.net"); the proxy routes WebhookPath on it to Stripe
	// and gets it a certificate. Required when Stripe is on.
	WebhookHost string `toml:"webhook_host"`
	// WebhookPath is the path of the webhook on WebhookHost. Default
	// "/stripe/webhook".
	WebhookPath string `toml:"webhook_path"`
	// APIBase is the Stripe API's base URL. Default "https://api.stripe.com";
	// tests point it at stripe-mock's http address.
	APIBase string `toml:"api_base"`
	// MeterEventName is the event_name of the Stripe billing meter that
	// overage bytes are reported to (the meter must sum "value" per
	// "stripe_customer_id"). Default "tollgate_egress_overage".
	MeterEventName string `toml:"meter_event_name"`
	// ReportInterval is how often overage is computed and pending meter
	// events are sent; it is also the first retry delay of a failed send.
	// Each pass reads the hourly usage of orgs whose next hour is due.
	// Default 1m.
	ReportInterval time.Duration `toml:"report_interval"`
	// ReportDelay is how long after an hour ends its overage is reported,
	// so that every node's late counter flushes are in. Default 5m.
	ReportDelay time.Duration `toml:"report_delay"`
	// Tolerance is how far in the past a webhook's signature timestamp may
	// be (replay protection). Default 5m, as Stripe's libraries.
	Tolerance time.Duration `toml:"tolerance"`
	// CheckoutSuccessURL and CheckoutCancelURL are where Stripe Checkout
	// sends the tenant back after paying or giving up, "{org}" replaced by
	// the org's id (e.g. "https://console.example/orgs/{org}/billing").
	// Both are needed for POST /v1/orgs/{id}/checkout.
	CheckoutSuccessURL string `toml:"checkout_success_url"`
	CheckoutCancelURL  string `toml:"checkout_cancel_url"`
	// PortalReturnURL is where the customer portal's "back" link goes,
	// "{org}" replaced; needed for POST /v1/orgs/{id}/portal.
	PortalReturnURL string `toml:"portal_return_url"`
}

// OrgURL is u with "{org}" replaced by org, path-escaped.
func OrgURL(u, org string) string { return strings.ReplaceAll(u, "{org}", url.PathEscape(org)) }

// Defaults of [billing.stripe]. The API base and the tolerance are
// stripe-go's own (stripe.APIURL, webhook.DefaultTolerance), written out so
// that billing does not link stripe-go; package billing/stripe checks that
// they still agree.
const (
	defaultWebhookPath     = "/stripe/webhook"
	defaultMeterEventName  = "tollgate_egress_overage"
	defaultStripeAPIBase   = "https://api.stripe.com"
	defaultStripeTolerance = 300 * time.Second
)

// Enabled reports whether Stripe is configured at all.
func (c StripeConfig) Enabled() bool { return c.SecretKey != "" || c.WebhookSecret != "" }

// Defaults fills unset fields.
func (c *StripeConfig) Defaults() {
	if c.WebhookPath == "" {
		c.WebhookPath = defaultWebhookPath
	}
	if c.APIBase == "" {
		c.APIBase = defaultStripeAPIBase
	}
	if c.MeterEventName == "" {
		c.MeterEventName = defaultMeterEventName
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = time.Minute
	}
	if c.ReportDelay == 0 {
		c.ReportDelay = 5 * time.Minute
	}
	if c.Tolerance == 0 {
		c.Tolerance = defaultStripeTolerance
	}
}

// Validate names every bad key of [billing.stripe]. It does no I/O, never
// repeats a secret, and accepts unset fields that Defaults fills.
func (c StripeConfig) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	bad := func(k, format string, args ...any) {
		errs = append(errs, fmt.Errorf("billing.stripe.%s: %s", k, fmt.Sprintf(format, args...)))
	}
	if c.SecretKey != "" && !strings.HasPrefix(c.SecretKey, "sk_") && !strings.HasPrefix(c.SecretKey, "rk_") {
		bad("secret_key", "must be a secret (sk_…) or restricted (rk_…) API key")
	}
	switch {
	case c.WebhookSecret == "":
		bad("webhook_secret", "required when Stripe is on (the endpoint's signing secret, whsec_…)")
	case !strings.HasPrefix(c.WebhookSecret, "whsec_"):
		bad("webhook_secret", "must be an endpoint signing secret (whsec_…)")
	}
	if c.WebhookHost == "" {
		bad("webhook_host", "required when Stripe is on (the public hostname the webhook is served on)")
	} else if _, err := sites.NormalizeDomain(c.WebhookHost); err != nil {
		bad("webhook_host", "%v", err)
	}
	if c.WebhookPath != "" && (!strings.HasPrefix(c.WebhookPath, "/") || strings.ContainsAny(c.WebhookPath, "?# ")) {
		bad("webhook_path", "%q must be an absolute path without query", c.WebhookPath)
	}
	if c.APIBase != "" {
		if u, err := url.Parse(c.APIBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.RawQuery != "" || u.Fragment != "" {
			bad("api_base", "%q must be an http:// or https:// URL with a host", c.APIBase)
		}
	}
	if len(c.MeterEventName) > 100 {
		bad("meter_event_name", "at most 100 characters (Stripe's limit)")
	}
	if c.ReportInterval != 0 && c.ReportInterval < 10*time.Millisecond {
		bad("report_interval", "%s is below 10ms", c.ReportInterval)
	}
	if c.ReportDelay < 0 {
		bad("report_delay", "must not be negative")
	}
	if c.Tolerance < 0 {
		bad("tolerance", "must not be negative")
	}
	for _, k := range []struct{ name, v string }{{"checkout_success_url", c.CheckoutSuccessURL},
		{"checkout_cancel_url", c.CheckoutCancelURL}, {"portal_return_url", c.PortalReturnURL}} {
		if k.v == "" {
			continue
		}
		if u, err := url.Parse(OrgURL(k.v, "org")); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(k.name, "%q must be an http:// or https:// URL with a host", k.v)
		}
	}
	return errors.Join(errs...)
}
