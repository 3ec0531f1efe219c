package sites

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Errors returned by the registry. Callers test them with errors.Is; the admin
// API maps each to one HTTP status.
var (
	// ErrNotFound: the named plan, org, site or domain does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write clashes with existing state (an id or a domain taken,
	// an org that still owns sites).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: a field is malformed or refers to something that does not exist.
	ErrInvalid = errors.New("invalid")
	// ErrReserved: the domain is one of tollgate's own hostnames (see
	// Registry.Reserve). It matches ErrConflict.
	ErrReserved = fmt.Errorf("reserved name: %w", ErrConflict)
	// ErrSiteNotFound is what routing returns for a host no site serves.
	ErrSiteNotFound = errors.New("no site for this host")
)

// LimitError is returned when a plan limit forbids a creation. It matches
// ErrConflict with errors.Is.
type LimitError struct {
	Limit string // "sites" or "domains"
	Max   int
	Plan  string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("plan %q allows at most %d %s", e.Plan, e.Max, e.Limit)
}

// Is makes a LimitError match ErrConflict.
func (e *LimitError) Is(target error) bool { return target == ErrConflict }

// Duration is a time.Duration written as a Go duration string ("72h") in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "72h"-style strings (and, for convenience, plain seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs int64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration must be a string like \"72h\"")
		}
		*d = Duration(time.Duration(secs) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Plan is a set of limits an org subscribes to. A zero limit means unlimited.
type Plan struct {
	Name string `json:"name"`
	// EgressBytes is the egress allowed per billing period.
	EgressBytes int64 `json:"egress_bytes"`
	// StorageBytes is the storage allowed across the org's sites.
	StorageBytes int64 `json:"storage_bytes"`
	// Sites is how many sites the org may own.
	Sites int `json:"sites"`
	// Domains is how many custom domains the org may attach, over all its sites.
	Domains int `json:"domains"`
	// ThrottleBPS is the bandwidth (bytes per second) an org over its egress
	// quota is slowed to; 0 means over-quota orgs are not throttled.
	ThrottleBPS int64 `json:"throttle_bps"`
	// HardLimitPercent is the share of the egress quota past which requests are
	// blocked: 0 never blocks, otherwise at least 100.
	HardLimitPercent int `json:"hard_limit_percent"`
	// GracePeriod is how long a past-due org keeps being served.
	GracePeriod Duration `json:"grace_period"`
	// Rank orders plans into a ladder: a tenant may only move to a plan of a
	// higher rank at once; a move down waits for the end of the paid period,
	// and only the operator may force one (package billing). Equal ranks
	// are neither up nor down: any move between them is a downgrade.
	Rank int `json:"rank"`
	// TrialDays is the length of the trial an org created on this plan (or
	// moved to it by the operator with a trial) gets; 0: no trial.
	TrialDays int `json:"trial_days,omitempty"`
	// RequestsPerSecond caps the requests an org's sites are served each
	// second (a token bucket per org); 0: no cap.
	RequestsPerSecond int64 `json:"requests_per_second,omitempty"`
	// Public lists the plan in the public plan catalog (GET /v1/plans
	// without a token), which tenants choose from.
	Public bool `json:"public"`
	// Price is what the plan costs, as the catalog shows it; nil: not
	// shown. It is the operator's statement: Stripe charges the price whose
	// lookup_key is the plan's name, and tollgate computes no money.
	Price *Price `json:"price,omitempty"`
	// Prepaid bills the plan's orgs from their prepaid credit (package
	// credit): each completed hour's egress beyond EgressBytes and storage
	// beyond StorageBytes (0 includes none) is priced with the two prices
	// below and drawn from the org's balance; the egress quota neither
	// throttles nor blocks them; at a balance of zero or less the org goes
	// past_due (GracePeriod), then expired, until a top-up.
	Prepaid bool `json:"prepaid,omitempty"`
	// OveragePricePerGiB is the price of a GiB (2^30 bytes) of egress
	// beyond EgressBytes in a period, in minor units of [billing] currency
	// (prepaid plans).
	OveragePricePerGiB int64 `json:"overage_price_per_gib,omitempty"`
	// StoragePricePerGiBMonth is the price of a GiB stored beyond
	// StorageBytes for 30 days, in minor units, charged pro rata per hour
	// (prepaid plans).
	StoragePricePerGiBMonth int64 `json:"storage_price_per_gib_month,omitempty"`
}

// Price is a plan's price: Amount in the currency's minor units (cents)
// per Interval.
type Price struct {
	Amount int64 `json:"amount"`
	// Currency is an ISO 4217 code in lower case, as Stripe writes it ("eur").
	Currency string `json:"currency"`
	// Interval is "month" or "year".
	Interval string `json:"interval"`
}

// Validate reports every bad field of p.
func (p Price) Validate() error {
	var errs []error
	if p.Amount < 0 {
		errs = append(errs, errors.New("price.amount: must not be negative"))
	}
	if len(p.Currency) != 3 || strings.Trim(p.Currency, "abcdefghijklmnopqrstuvwxyz") != "" {
		errs = append(errs, fmt.Errorf("price.currency: %q must be an ISO 4217 code in lower case, such as \"eur\"", p.Currency))
	}
	if p.Interval != "month" && p.Interval != "year" {
		errs = append(errs, fmt.Errorf("price.interval: %q must be \"month\" or \"year\"", p.Interval))
	}
	return errors.Join(errs...)
}

// Validate reports every bad field of p.
func (p Plan) Validate() error {
	var errs []error
	if !validID(p.Name) {
		errs = append(errs, fmt.Errorf("name: %q must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", p.Name))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"egress_bytes", p.EgressBytes}, {"storage_bytes", p.StorageBytes}, {"sites", int64(p.Sites)},
		{"domains", int64(p.Domains)}, {"throttle_bps", p.ThrottleBPS}, {"grace_period", int64(p.GracePeriod)},
		{"rank", int64(p.Rank)}, {"trial_days", int64(p.TrialDays)}, {"requests_per_second", p.RequestsPerSecond},
		{"overage_price_per_gib", p.OveragePricePerGiB}, {"storage_price_per_gib_month", p.StoragePricePerGiBMonth}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", f.name))
		}
	}
	if p.Price != nil {
		errs = append(errs, p.Price.Validate())
	}
	if p.TrialDays > 3660 {
		errs = append(errs, fmt.Errorf("trial_days: %d is more than ten years", p.TrialDays))
	}
	if p.HardLimitPercent != 0 && (p.HardLimitPercent < 100 || p.HardLimitPercent > 10000) {
		errs = append(errs, fmt.Errorf("hard_limit_percent: %d must be 0 (never block) or between 100 and 10000", p.HardLimitPercent))
	}
	return errors.Join(errs...)
}

// FreePlan is the plan that exists out of the box, so a fresh installation can
// register an org without configuring anything: 1 site, 1 domain, 16 MiB of
// storage and 1 GiB of egress a month. Operators change it with PUT /v1/plans/free.
var FreePlan = Plan{
	Name:             "free",
	EgressBytes:      1 << 30,
	StorageBytes:     16 << 20,
	Sites:            1,
	Domains:          1,
	ThrottleBPS:      128 << 10,
	HardLimitPercent: 150,
	GracePeriod:      Duration(72 * time.Hour),
}

// Org states: the account lifecycle (package billing moves orgs between
// them and records why).
const (
	StateTrialing  = "trialing"  // served; no payment yet
	StateActive    = "active"    // served
	StatePastDue   = "past_due"  // a payment failed; served until GraceEndsAt
	StateExpired   = "expired"   // grace over: sites paused (402)
	StateSuspended = "suspended" // by the operator: sites blocked (403)
)

// ValidState reports whether s is an org state.
func ValidState(s string) bool {
	switch s {
	case StateTrialing, StateActive, StatePastDue, StateExpired, StateSuspended:
		return true
	}
	return false
}

// Org is the billing entity that owns sites.
type Org struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Plan  string `json:"plan"`
	State string `json:"state"`
	// GiteaOwners are the Gitea users or orgs whose pages this org pays for.
	// An owner served through the pages domain that no org lists gets a
	// synthetic org of its own, "gitea-{owner}".
	GiteaOwners []string `json:"gitea_owners,omitempty"`
	CreatedAt   Instant  `json:"created_at"`
	// StripeCustomer links the org to a Stripe customer (cus_…).
	StripeCustomer string `json:"stripe_customer,omitempty"`
	// GraceEndsAt is when a past_due org expires.
	GraceEndsAt Instant `json:"grace_ends_at,omitzero"`
	// StripeEventAt is the creation time of the newest Stripe event applied
	// to the org; older events are ignored (Stripe does not deliver in order).
	StripeEventAt Instant `json:"stripe_event_at,omitzero"`
	// TrialEndsAt is when a trialing org's trial ends (package billing moves
	// it on then); zero: no trial.
	TrialEndsAt Instant `json:"trial_ends_at,omitzero"`
	// PendingPlan is a downgrade asked by the tenant, applied at
	// PendingPlanAt (the end of the paid period); "" when none.
	PendingPlan   string  `json:"pending_plan,omitempty"`
	PendingPlanAt Instant `json:"pending_plan_at,omitzero"`
	// StorageOverSince is when billing first saw the org store more than its
	// plan's storage_bytes; zero while it is within the quota. Past
	// [billing] storage_grace the org is blocked.
	StorageOverSince Instant `json:"storage_over_since,omitzero"`
	// OverPlanSince is when billing first saw the org own more sites or
	// domains than its plan allows; zero while within. Past [billing]
	// downgrade_grace the excess is not served.
	OverPlanSince Instant `json:"over_plan_since,omitzero"`
}

// Validate checks the org's own fields (not whether its plan exists).
func (o Org) Validate() error {
	var errs []error
	if !validID(o.ID) {
		errs = append(errs, fmt.Errorf("id: %q must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", o.ID))
	}
	if len(o.Name) > 200 {
		errs = append(errs, errors.New("name: at most 200 characters"))
	}
	if o.Plan == "" {
		errs = append(errs, errors.New("plan: required"))
	}
	if !ValidState(o.State) {
		errs = append(errs, fmt.Errorf("state: %q must be one of trialing, active, past_due, expired, suspended", o.State))
	}
	if o.StripeCustomer != "" && (len(o.StripeCustomer) > 255 || !strings.HasPrefix(o.StripeCustomer, "cus_")) {
		errs = append(errs, fmt.Errorf("stripe_customer: %q is not a Stripe customer id (cus_…)", o.StripeCustomer))
	}
	if len(o.GiteaOwners) > 1000 {
		errs = append(errs, errors.New("gitea_owners: at most 1000"))
	}
	for _, owner := range o.GiteaOwners {
		if !ValidGiteaOwner(owner) {
			errs = append(errs, fmt.Errorf("gitea_owners: %q is not a Gitea user or org name usable in a hostname (lower case a-z, 0-9, '-', '_')", owner))
		}
	}
	return errors.Join(errs...)
}

// Source types.
const (
	SourceDir      = "dir"
	SourceUpstream = "upstream"
	SourceGitea    = "gitea"
)

// Source says where a site's content comes from.
type Source struct {
	// Type is "dir" (a local directory) or "upstream" (a tenant instance to
	// reverse-proxy).
	Type string `json:"type"`
	// Path is the directory of a "dir" site; it must be absolute.
	Path string `json:"path,omitempty"`
	// URL is the base URL of an "upstream" site: http or https, host and
	// optional port, no query.
	URL string `json:"url,omitempty"`
	// Owner, Repo and Branch name the repository of a "gitea" site; Branch
	// "" means the pages branch if the repository has one, else its default.
	Owner  string `json:"owner,omitempty"`
	Repo   string `json:"repo,omitempty"`
	Branch string `json:"branch,omitempty"`
}

// Validate checks the source's fields.
func (s Source) Validate() error {
	switch s.Type {
	case SourceGitea:
		if s.Path != "" || s.URL != "" {
			return errors.New("source: a gitea source takes owner, repo and branch only")
		}
		if !ValidGiteaOwner(strings.ToLower(s.Owner)) || !ValidRepoName(s.Repo) {
			return fmt.Errorf("source: owner %q and repo %q must be Gitea names", s.Owner, s.Repo)
		}
		if s.Branch != "" && !validBranch(s.Branch) {
			return fmt.Errorf("source.branch: %q is not a valid branch name", s.Branch)
		}
		return nil
	case SourceDir:
		if s.URL != "" || s.Owner != "" || s.Repo != "" || s.Branch != "" {
			return errors.New("source: a dir source takes path only")
		}
		if s.Path == "" || !filepath.IsAbs(s.Path) {
			return fmt.Errorf("source.path: %q must be an absolute directory path", s.Path)
		}
		if strings.ContainsRune(s.Path, 0) {
			return errors.New("source.path: contains NUL")
		}
	case SourceUpstream:
		if s.Path != "" || s.Owner != "" || s.Repo != "" || s.Branch != "" {
			return errors.New("source: an upstream source takes url only")
		}
		u, err := url.Parse(s.URL)
		if err != nil {
			return fmt.Errorf("source.url: %w", err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("source.url: %q must start with http:// or https://", s.URL)
		}
		if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("source.url: %q must be scheme://host[:port][/path] with no user, query or fragment", s.URL)
		}
	case "":
		return errors.New("source.type: required (\"dir\", \"upstream\" or \"gitea\")")
	default:
		return fmt.Errorf("source.type: %q is not one of \"dir\", \"upstream\", \"gitea\"", s.Type)
	}
	return nil
}

// Site is something tollgate serves, owned by one org.
type Site struct {
	ID     string `json:"id"`
	Org    string `json:"org"`
	Source Source `json:"source"`
	// HSTS is the site's Strict-Transport-Security policy, sent on its
	// HTTPS responses (RFC 6797); nil, the default: none.
	HSTS *HSTS `json:"hsts,omitempty"`
	// Active is the tenant's or operator's choice for an org with more sites
	// than its plan allows: true keeps the site served before unmarked ones,
	// false deactivates it (never served; it gives way first). nil: unmarked,
	// kept oldest first.
	Active    *bool   `json:"active,omitempty"`
	CreatedAt Instant `json:"created_at"`
}

// HSTS is a Strict-Transport-Security policy. Off unless a site opts in:
// once a browser has it, the host is HTTPS-only for MaxAge, and with
// IncludeSubdomains every subdomain too, served by tollgate or not.
type HSTS struct {
	// MaxAge is how long browsers keep the policy: 1s to 2 years (17520h).
	MaxAge Duration `json:"max_age"`
	// IncludeSubdomains extends the policy to every subdomain.
	IncludeSubdomains bool `json:"include_subdomains,omitempty"`
	// Preload asks for inclusion in browsers' preload lists (hstspreload.org):
	// it needs IncludeSubdomains and a MaxAge of at least a year.
	Preload bool `json:"preload,omitempty"`
}

// Validate checks the policy's ranges.
func (h HSTS) Validate() error {
	var errs []error
	if d := time.Duration(h.MaxAge); d < time.Second || d > 2*8760*time.Hour {
		errs = append(errs, fmt.Errorf("hsts.max_age: %s not in 1s..17520h", d))
	}
	if h.Preload && (!h.IncludeSubdomains || time.Duration(h.MaxAge) < 8760*time.Hour) {
		errs = append(errs, errors.New("hsts.preload: needs include_subdomains and a max_age of at least 8760h"))
	}
	return errors.Join(errs...)
}

// Validate checks the site's own fields.
func (s Site) Validate() error {
	var errs []error
	if !validID(s.ID) {
		errs = append(errs, fmt.Errorf("id: %q must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", s.ID))
	}
	errs = append(errs, s.Source.Validate())
	if s.HSTS != nil {
		errs = append(errs, s.HSTS.Validate())
	}
	return errors.Join(errs...)
}

// Domain statuses.
const (
	// DomainVerified: the domain may be routed and may get a certificate. Domains
	// attached by an operator through the admin API are trusted and verified.
	DomainVerified = "verified"
	// DomainPending: attached by a tenant, not yet proven by DNS (a TXT
	// record at _tollgate.{domain} naming the site). Neither routed nor
	// given a certificate.
	DomainPending = "pending"
)

// Ways a domain is proven (Domain.Via).
const (
	ViaOperator = "operator"  // attached through the admin API: trusted
	ViaCNAME    = "dns-cname" // a CNAME to the pages host
	ViaTXT      = "dns-txt"   // a TXT record at _tollgate.{domain} naming the site
	ViaTenant   = "tenant"    // attached by a tenant's token: pending until DNS proves it
)

// Domain is a hostname attached to one site.
type Domain struct {
	Name   string `json:"domain"`
	Site   string `json:"site"`
	Status string `json:"status"`
	// Via says how the domain was proven: "operator" (admin API),
	// "dns-cname" or "dns-txt" (declared in a repository's .domains).
	Via       string  `json:"via,omitempty"`
	CreatedAt Instant `json:"created_at"`
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidID reports whether s can be the id of a plan, org or site: 1-63 of
// a-z, 0-9 and '-', starting with a letter or digit.
func ValidID(s string) bool { return validID(s) }

func validID(s string) bool { return idRE.MatchString(s) }

// ValidGiteaOwner reports whether owner can be a Gitea user or org name that
// is also a hostname label (what {owner}.{pages_domain} needs): 1-39 of
// a-z, 0-9, '_' and '-', starting with a letter or digit.
func ValidGiteaOwner(owner string) bool { return ValidGiteaOwnerBytes([]byte(owner)) }

// ValidGiteaOwnerBytes is ValidGiteaOwner for the request path: it does not
// allocate.
func ValidGiteaOwnerBytes(owner []byte) bool {
	if len(owner) == 0 || len(owner) > 39 {
		return false
	}
	for i, c := range owner {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

// ValidRepoName reports whether name can be a Gitea repository name.
func ValidRepoName(name string) bool { return ValidRepoNameBytes([]byte(name)) }

// ValidRepoNameBytes is ValidRepoName without allocating: 1-100 of A-Z,
// a-z, 0-9, '_', '.' and '-', not "." or "..", not ending in ".git".
func ValidRepoNameBytes(name []byte) bool {
	if len(name) == 0 || len(name) > 100 || string(name) == "." || string(name) == ".." || bytes.HasSuffix(name, []byte(".git")) {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidBranchName reports whether b is a branch name tollgate serves.
func ValidBranchName(b string) bool { return validBranch(b) }

// validBranch accepts what git accepts as a branch name, minus the oddities
// no pages site needs (see git-check-ref-format).
func validBranch(b string) bool {
	if b == "" || len(b) > 255 || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") ||
		strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".") || strings.HasSuffix(b, ".lock") ||
		strings.Contains(b, "..") || strings.Contains(b, "//") || strings.Contains(b, "@{") {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c == 0x7f || strings.ContainsRune("~^:?*[\\", c) {
			return false
		}
	}
	return path.Clean("/"+b) == "/"+b
}
