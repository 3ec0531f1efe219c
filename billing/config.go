package billing

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// Config is the [billing] section.
type Config struct {
	// DefaultPlan is the plan of synthetic orgs (Gitea owners no org claimed)
	// and of orgs whose subscription is cancelled. It must exist when used;
	// the built-in "free" plan always does unless deleted. Default "free".
	DefaultPlan string `toml:"default_plan"`
	// Plans ([[billing.plans]]) are created or replaced at start, so a
	// deployment can keep its plans in its config. Plans made through the
	// admin API stay as they are.
	Plans []PlanConfig `toml:"plans"`
	// EnforceInterval is how often each org's decision (allow, throttle,
	// block) is recomputed from the usage counters; with the meter's flush
	// interval it bounds how late a decision follows traffic. A pass that
	// takes longer than a tenth of it (a million orgs) puts the next one ten
	// times its own duration later, so enforcement stays under a tenth of a
	// core. Default 1s.
	EnforceInterval time.Duration `toml:"enforce_interval"`
	// GraceEndingNotice is how long before a past-due org expires the
	// grace.ending hook fires. Default 24h.
	GraceEndingNotice time.Duration `toml:"grace_ending_notice"`
	// StorageGrace is how long an org may store more than its plan's
	// storage_bytes before its sites are blocked (429, STORAGE_QUOTA_EXCEEDED);
	// back under the quota, or on a larger plan, they are served again at
	// once. Default 72h.
	StorageGrace time.Duration `toml:"storage_grace"`
	// DowngradeGrace is how long an org may own more sites or domains than
	// its plan allows (after a downgrade, a cancellation, a trial's end)
	// before the excess stops being served: the sites last created (after
	// those marked active: true) answer a "not included in this plan" page
	// (402), the domains last attached likewise. Nothing is deleted; a plan
	// that includes them serves them again at once. Default 72h.
	DowngradeGrace time.Duration `toml:"downgrade_grace"`
	// TrialEndingNotice is how long before a trial ends the trial.ending
	// hook fires. Default 72h.
	TrialEndingNotice time.Duration `toml:"trial_ending_notice"`
	// RenewalURL is where an org settles a refusal of its plan or payment:
	// an absolute http(s) URL of the operator's console, each {org}
	// replaced by the org's id (escaped), e.g.
	// "https://console.example/orgs/{org}/billing". The pages of
	// PAYMENT_REQUIRED (402), QUOTA_EXCEEDED and STORAGE_QUOTA_EXCEEDED
	// (429) and UPGRADE_REQUIRED (402) link to it ("Is this your site?
	// Manage its plan."), as the RenewalURL of [proxy] error_pages
	// templates. Every visitor of the site sees the link: with {org} in
	// it, the org's id is public; a URL without {org} (a console that
	// knows who signs in) shows nothing of the org. Default "": no link.
	RenewalURL string `toml:"renewal_url"`
	// Currency is the ISO 4217 code (lower case) of the prepaid credit
	// ledger's amounts and of credit top-ups through Stripe Checkout.
	// Default "eur".
	Currency string `toml:"currency"`
	// CreditLowThreshold is the balance (minor units) at or below which a
	// draw from an org's prepaid credit fires credit.low. Default 0: only
	// credit.exhausted fires.
	CreditLowThreshold int64 `toml:"credit_low_threshold"`
	// CreditSettle is how long after an hour ends its usage is priced and
	// drawn from prepaid credit: the nodes' counters of the hour are
	// flushed by then. Usage flushed later is not charged. Default 5m.
	CreditSettle time.Duration `toml:"credit_settle"`
	// Stripe is [billing.stripe]; off unless secret_key or webhook_secret is set.
	Stripe StripeConfig `toml:"stripe"`
	// Hooks ([[billing.hooks]]) receive signed lifecycle events.
	Hooks []HookConfig `toml:"hooks"`
}

// PlanConfig is one [[billing.plans]] entry; see sites.Plan for each limit.
type PlanConfig struct {
	Name             string        `toml:"name"`
	EgressBytes      int64         `toml:"egress_bytes"`
	StorageBytes     int64         `toml:"storage_bytes"`
	Sites            int           `toml:"sites"`
	Domains          int           `toml:"domains"`
	ThrottleBPS      int64         `toml:"throttle_bps"`
	HardLimitPercent int           `toml:"hard_limit_percent"`
	GracePeriod      time.Duration `toml:"grace_period"`
	// RequestsPerSecond caps the requests an org's sites are served each
	// second; 0: no cap. Each node holds a token bucket per org of
	// requests_per_second ÷ limits.cluster_nodes, burst one second of it;
	// past it requests get 429 with Retry-After, RateLimit-Policy
	// ("org";q=N;w=1), RateLimit and Tollgate-Reason: RATE_LIMITED.
	RequestsPerSecond int64 `toml:"requests_per_second"`
	Rank              int   `toml:"rank"`
	TrialDays         int   `toml:"trial_days"`
	// Public lists the plan in the public plan catalog: GET /v1/plans
	// without a token (the tenant API's listener among others). Default
	// false: only the operator sees it.
	Public bool `toml:"public"`
	// PriceAmount, PriceCurrency and PriceInterval are the price the public
	// catalog shows (amount in minor units, e.g. 1900 with "eur" and
	// "month"); all three or none. Stripe charges its own price.
	PriceAmount   int64  `toml:"price_amount"`
	PriceCurrency string `toml:"price_currency"`
	PriceInterval string `toml:"price_interval"`
	// Prepaid bills the plan's orgs from their prepaid credit: each
	// completed hour's usage beyond egress_bytes and storage_bytes is
	// priced with the two prices below and drawn from the balance; out of
	// credit, the org goes past_due, then expired. Default false.
	Prepaid bool `toml:"prepaid"`
	// OveragePricePerGiB is the price of a GiB of egress beyond
	// egress_bytes in a period, in minor units of [billing] currency.
	OveragePricePerGiB int64 `toml:"overage_price_per_gib"`
	// StoragePricePerGiBMonth is the price of a GiB stored beyond
	// storage_bytes for 30 days, in minor units, charged per hour.
	StoragePricePerGiBMonth int64 `toml:"storage_price_per_gib_month"`
}

// Plan converts the entry.
func (p PlanConfig) Plan() sites.Plan {
	plan := sites.Plan{Name: p.Name, EgressBytes: p.EgressBytes, StorageBytes: p.StorageBytes, Sites: p.Sites, Domains: p.Domains,
		ThrottleBPS: p.ThrottleBPS, HardLimitPercent: p.HardLimitPercent, GracePeriod: sites.Duration(p.GracePeriod),
		RequestsPerSecond: p.RequestsPerSecond, Rank: p.Rank, TrialDays: p.TrialDays, Public: p.Public,
		Prepaid: p.Prepaid, OveragePricePerGiB: p.OveragePricePerGiB, StoragePricePerGiBMonth: p.StoragePricePerGiBMonth}
	if p.PriceAmount != 0 || p.PriceCurrency != "" || p.PriceInterval != "" {
		plan.Price = &sites.Price{Amount: p.PriceAmount, Currency: p.PriceCurrency, Interval: p.PriceInterval}
	}
	return plan
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.DefaultPlan == "" {
		c.DefaultPlan = "free"
	}
	if c.EnforceInterval == 0 {
		c.EnforceInterval = time.Second
	}
	if c.GraceEndingNotice == 0 {
		c.GraceEndingNotice = 24 * time.Hour
	}
	if c.StorageGrace == 0 {
		c.StorageGrace = 72 * time.Hour
	}
	if c.DowngradeGrace == 0 {
		c.DowngradeGrace = 72 * time.Hour
	}
	if c.TrialEndingNotice == 0 {
		c.TrialEndingNotice = 72 * time.Hour
	}
	if c.Currency == "" {
		c.Currency = "eur"
	}
	if c.CreditSettle == 0 {
		c.CreditSettle = 5 * time.Minute
	}
	c.Stripe.Defaults()
}

// Validate names every bad key of [billing].
func (c Config) Validate() error {
	var errs []error
	if c.DefaultPlan == "" || len(c.DefaultPlan) > 63 {
		errs = append(errs, fmt.Errorf("billing.default_plan: %q must be a plan name", c.DefaultPlan))
	}
	if c.EnforceInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("billing.enforce_interval: %s is below 10ms", c.EnforceInterval))
	}
	if c.GraceEndingNotice < 0 {
		errs = append(errs, errors.New("billing.grace_ending_notice: must not be negative"))
	}
	if c.StorageGrace < 0 {
		errs = append(errs, errors.New("billing.storage_grace: must not be negative"))
	}
	if c.DowngradeGrace < 0 {
		errs = append(errs, errors.New("billing.downgrade_grace: must not be negative"))
	}
	if c.TrialEndingNotice < 0 {
		errs = append(errs, errors.New("billing.trial_ending_notice: must not be negative"))
	}
	if len(c.Currency) != 3 || strings.Trim(c.Currency, "abcdefghijklmnopqrstuvwxyz") != "" {
		errs = append(errs, fmt.Errorf("billing.currency: %q must be an ISO 4217 code in lower case, such as \"eur\"", c.Currency))
	}
	if c.CreditLowThreshold < 0 {
		errs = append(errs, errors.New("billing.credit_low_threshold: must not be negative"))
	}
	if c.CreditSettle < 0 || c.CreditSettle >= time.Hour {
		errs = append(errs, fmt.Errorf("billing.credit_settle: %s must be between 0 and 1h", c.CreditSettle))
	}
	if err := validRenewalURL(c.RenewalURL); err != nil {
		errs = append(errs, err)
	}
	seen := map[string]bool{}
	for i, p := range c.Plans {
		if err := p.Plan().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("billing.plans[%d]: %w", i, err))
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("billing.plans[%d]: plan %q listed twice", i, p.Name))
		}
		seen[p.Name] = true
	}
	errs = append(errs, c.Stripe.Validate())
	for i, h := range c.Hooks {
		errs = append(errs, h.Validate(i))
	}
	return errors.Join(errs...)
}

// validRenewalURL checks [billing] renewal_url: "" or an absolute http(s)
// URL once {org} is replaced.
func validRenewalURL(u string) error {
	if u == "" {
		return nil
	}
	p, err := url.Parse(strings.ReplaceAll(u, "{org}", "org"))
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("billing.renewal_url: %q is not an absolute http or https URL", u)
	}
	return nil
}
