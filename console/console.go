// Package console is the tenant's HTML console: an http.Handler, mounted at
// /console/, where a tenant signs in with an org-scoped token and reads its
// org's usage, limits, current decision, sites, domains and account
// history and prepaid credit, adds domains and goes to Stripe to upgrade,
// manage billing or top up its credit.
//
// Pages are rendered on the server with html/template and a little embedded
// CSS; none needs JavaScript. The org shown is always the signed-in token's:
// no page takes an org from the URL or a form, so another org's data cannot
// be named, let alone read.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// Scopes a tenant token may hold.
const (
	ScopeRead    = "read"    // usage, limits, sites, domains, events
	ScopeWrite   = "write"   // add domains
	ScopeBilling = "billing" // checkout, portal and top-up links
	ScopeAdmin   = "admin"   // every scope of the org
)

// Tenant is what a token grants: one org and its scopes.
type Tenant struct {
	Org    string
	Scopes []string
}

// Has reports whether t grants scope; admin grants every scope.
func (t Tenant) Has(scope string) bool {
	for _, s := range t.Scopes {
		if s == scope || s == ScopeAdmin {
			return true
		}
	}
	return false
}

// Errors Tokens returns for a secret that grants nothing. Sign-in shows
// each with its own message; any other error is shown as a failure to
// check the token.
var (
	ErrTokenUnknown = errors.New("unknown token")
	ErrTokenRevoked = errors.New("token revoked")
	ErrTokenExpired = errors.New("token expired")
)

// Tokens resolves a tenant token's secret to its org and scopes. It is
// called at sign-in and on every request of a session, so a revoked or
// expired token ends its sessions at their next request; it must be fast
// and safe for concurrent use.
type Tokens interface {
	Tenant(ctx context.Context, secret string) (Tenant, error)
}

// Registry is what the console reads and writes of the registry.
// *sites.Registry implements it.
type Registry interface {
	Snapshot() *sites.Snapshot
	// AttachDomainVia attaches a domain proven by via (sites.ViaCNAME or
	// sites.ViaTXT) to a site, verified.
	AttachDomainVia(ctx context.Context, siteID, name, via string) (sites.Domain, error)
}

// Usage reads metered usage. *store.BoltUsage and *store.RedisUsage
// implement it.
type Usage interface {
	// Hourly returns the org's hour buckets in [from, to), oldest first,
	// without the hours that had no usage.
	Hourly(ctx context.Context, org string, from, to time.Time) ([]meter.Point, error)
	// SiteTotals returns the totals in [from, to) of each of the org's sites
	// that had usage then, by site id.
	SiteTotals(ctx context.Context, org string, from, to time.Time) ([]meter.SiteTotal, error)
}

// Accounts tells an org's access decision, excess and history.
// *billing.Billing implements it.
type Accounts interface {
	Gate(org string) *access.Gate
	OverPlan(org string) *billing.OverPlan
	Events(ctx context.Context, org string) ([]billing.Event, error)
}

// Payments makes the links a tenant follows to pay. *stripe.Stripe
// implements it.
type Payments interface {
	// Checkout returns a Stripe Checkout URL in which org subscribes to a
	// plan above its own.
	Checkout(ctx context.Context, org, plan string) (string, error)
	// Portal returns a Stripe customer-portal URL for org.
	Portal(ctx context.Context, org string) (string, error)
}

// TopUps sells prepaid credit through Stripe Checkout. *stripe.Stripe
// implements it.
type TopUps interface {
	// TopUp returns a Stripe Checkout URL in which org pays amount (minor
	// units of the ledger's currency) for credit; an amount it does not
	// take is sites.ErrInvalid.
	TopUp(ctx context.Context, org string, amount int64) (string, error)
	// CanTopUp reports whether TopUp is configured; it must be fast.
	CanTopUp() bool
}

// Storage tells how many bytes an org's sites store. *meter.Meter
// implements it.
type Storage interface {
	OrgStorage(org string) int64
}

// Verifier proves with DNS that whoever adds a domain controls it: it
// returns sites.ViaCNAME when domain is a CNAME of one of targets,
// sites.ViaTXT when _tollgate.{domain} has a TXT record equal to proof,
// and "" when neither. *gitea.DNSVerifier implements it.
type Verifier interface {
	Verify(ctx context.Context, domain, proof string, targets ...string) (string, error)
}

// Credits reads the prepaid credit ledger. *billing.Billing implements it.
type Credits interface {
	// CreditHistory is the org's balance and entries, oldest first.
	CreditHistory(ctx context.Context, org string) (int64, []credit.Entry, error)
	// Currency is the currency of the amounts (ISO 4217, lower case).
	Currency() string
}

// Codes redeems credit codes. *billing.Billing implements it.
type Codes interface {
	RedeemCode(ctx context.Context, org, code, actor string) (billing.CodeRedemption, error)
}

// Options are the console's collaborators. Tokens and Registry are
// required; each other one left nil hides what it provides and says so on
// the page.
type Options struct {
	Tokens   Tokens
	Registry Registry
	Usage    Usage
	Accounts Accounts
	Payments Payments
	Storage  Storage
	// Verifier checks the DNS records of a domain a tenant adds; nil: the
	// console cannot add domains.
	Verifier Verifier
	// Credits shows the org's prepaid credit; nil: the page says there is
	// none here.
	Credits Credits
	// TopUps adds a top-up form to the credit page (with Credits, for a
	// token with the billing scope); nil, or not CanTopUp: none.
	TopUps TopUps
	// Codes adds a form that redeems credit codes to the credit page (with
	// Credits, for a token with the billing scope); nil: none.
	Codes  Codes
	Logger *slog.Logger
	// Now is the clock (default time.Now): session expiry and the current
	// month. Tests inject one.
	Now func() time.Time
}

// Console serves the tenant console. It is safe for concurrent use.
type Console struct {
	cfg      Config
	opts     Options
	log      *slog.Logger
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/console.css
var consoleCSS []byte

// New builds the console.
func New(cfg Config, opts Options) (*Console, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Tokens == nil || opts.Registry == nil {
		return nil, errors.New("console: Options.Tokens and Registry are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, opts: opts, log: opts.Logger, pages: pages,
		sessions: newSessions(cfg.SessionTTL, cfg.MaxSessions, opts.Now)}
	c.routes()
	return c, nil
}

// ServeHTTP answers the console's paths, all under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self' https:; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// handler is a console page: it returns an error instead of writing one.
type handler func(w http.ResponseWriter, r *http.Request, s *session) error

// routes builds the mux: every page but sign-in and the stylesheet needs a
// session, and the scope it names (checked before the page runs).
func (c *Console) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET "+Prefix+"static/console.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_, _ = w.Write(consoleCSS)
	})
	m.HandleFunc("GET "+Prefix+"signin", c.signinPage)
	m.HandleFunc("POST "+Prefix+"signin", c.signin)
	m.Handle("POST "+Prefix+"signout", c.page("", c.signout))
	m.Handle("GET "+Prefix+"{$}", c.page(ScopeRead, c.overview))
	m.Handle("GET "+Prefix+"usage", c.page(ScopeRead, c.usage))
	m.Handle("GET "+Prefix+"usage.csv", c.page(ScopeRead, c.usageCSV))
	m.Handle("GET "+Prefix+"sites", c.page(ScopeRead, c.sitesPage))
	m.Handle("POST "+Prefix+"domains", c.page(ScopeWrite, c.addDomain))
	m.Handle("GET "+Prefix+"domains/{domain}", c.page(ScopeRead, c.domainPage))
	m.Handle("GET "+Prefix+"events", c.page(ScopeRead, c.events))
	m.Handle("GET "+Prefix+"credit", c.page(ScopeRead, c.credit))
	m.Handle("POST "+Prefix+"credit/top-up", c.page(ScopeBilling, c.topUp))
	m.Handle("POST "+Prefix+"credit/redeem", c.page(ScopeBilling, c.redeem))
	m.Handle("GET "+Prefix+"billing", c.page(ScopeRead, c.billingPage))
	m.Handle("POST "+Prefix+"checkout", c.page(ScopeBilling, c.checkout))
	m.Handle("POST "+Prefix+"portal", c.page(ScopeBilling, c.portal))
	m.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		s, _ := c.session(r) // the navigation, when signed in
		c.fail(w, r, s, &pageError{status: http.StatusNotFound, msg: "There is no such page in the console."})
	})
	c.mux = m
}

// page wraps h: the session (a sign-in redirect without one), the CSRF
// checks of a POST, the scope; then h, and its error rendered by fail.
func (c *Console) page(scope string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := c.session(r)
		if err != nil {
			if err == errNoSession && r.Method == http.MethodGet {
				http.Redirect(w, r, Prefix+"signin", http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, err)
			return
		}
		if r.Method == http.MethodPost {
			if err := c.checkPost(w, r, s); err != nil {
				c.fail(w, r, s, err)
				return
			}
		}
		if scope != "" && !s.tenant.Has(scope) {
			c.fail(w, r, s, &pageError{status: http.StatusForbidden,
				msg: fmt.Sprintf("Your token does not have the %q scope this needs. Ask an admin of your org for a token with it.", scope)})
			return
		}
		if err := h(w, r, s); err != nil {
			c.fail(w, r, s, err)
		}
	})
}

// pageError is an error shown to the tenant as it is, with its status.
type pageError struct {
	status int
	msg    string
}

func (e *pageError) Error() string { return e.msg }

// fail renders err on the error page: a pageError with its message and
// status, anything else as a 500 with a generic message (the error itself
// is logged, never shown).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var pe *pageError
	if !errors.As(err, &pe) {
		c.log.Error("console", slog.String("path", r.URL.Path), slog.Any("err", err))
		pe = &pageError{status: http.StatusInternalServerError, msg: "Something went wrong on our side. Try again in a moment."}
	}
	c.render(w, s, pe.status, "error", "Error", map[string]any{"Message": pe.msg, "Status": pe.status})
}
