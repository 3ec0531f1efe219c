package admin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/tokens"
)

// Options are the server's collaborators. Nil fields take the default noted.
type Options struct {
	// Metrics is the process's registry: the admin metrics are registered on
	// it and it is served at GET /metrics. Required.
	Metrics *prometheus.Registry
	// Checks are the readiness checks of GET /readyz, run in order, each
	// within readyTimeout. None failing: 200 "ready". Only non-fatal ones
	// failing: 200 "ready, degraded: NAME: reason; …" (a load balancer keeps
	// the node, operators see why). A fatal one failing: 503, the body
	// naming every failing check. Nil: always ready.
	Checks []Check
	// Logger receives internal errors and an audit line per write. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Usage answers GET /v1/usage. Nil: the route answers 503.
	Usage UsageReader
	// SiteUsage answers the per-site queries of GET /v1/usage (site=ID,
	// group_by=site). Nil: those answer 503.
	SiteUsage SiteUsageReader
	// Storage reports measured storage in GET /v1/orgs/{id} and
	// /v1/sites/{id}. *meter.Meter implements it. Nil: 0.
	Storage StorageReader
	// Gitea learns of pushes from POST /hooks/gitea, verified with
	// GiteaWebhookSecret. Nil or no secret: the route answers 404.
	Gitea              GiteaPushes
	GiteaWebhookSecret string
	// Certs answers GET /v1/certs. Nil (no TLS): the route answers 503.
	Certs CertLister
	// Accounts records state, plan and Stripe customer changes (PATCH
	// /v1/orgs/{id}) and answers GET /v1/orgs/{id}/events. Nil: PATCH
	// writes the registry directly and the events route answers 503.
	Accounts Accounts
	// Backups answers GET /v1/backup with a copy of the store. Nil: the
	// route answers 503.
	Backups Backups
	// Publishing tells GET /v1/sites/{id} which head commit of a Gitea
	// site is not published (publish_blocked). Nil: none is shown.
	Publishing PublishStatus
	// Payments makes the Stripe Checkout and customer-portal links of
	// POST /v1/orgs/{id}/checkout and /portal. Nil: they answer 503.
	Payments Payments
	// Invoicing creates operator invoices (POST /v1/orgs/{id}/invoices)
	// and lists an org's invoices. Nil: those routes answer 503.
	Invoicing Invoicing
	// Coupons creates Stripe coupons and promotion codes (/v1/coupons).
	// Nil: those routes answer 503.
	Coupons Coupons
	// Tokens keeps the org-scoped tokens: the /v1/orgs/{id}/tokens routes
	// and the tenants' access to the other routes (access.go). Nil: those
	// routes answer 503 and only the admin token is accepted.
	Tokens Tokens
	// DomainProof checks the DNS proof of a domain a tenant attached
	// (pending until then): GET /v1/domains/{domain} asks it while the
	// domain is pending. *gitea.DNSVerifier implements it. Nil: pending
	// domains stay pending until the operator attaches them.
	DomainProof DomainProof
	// Credits keeps the prepaid credit of /v1/orgs/{id}/credits. Nil:
	// those routes answer 503.
	Credits Credits
	// TopUps makes the links of POST /v1/orgs/{id}/credits/checkout. Nil:
	// it answers 503.
	TopUps TopUps
	// CreditCodes keeps the redeemable credit codes of /v1/credit-codes
	// and POST /v1/orgs/{id}/credits/redeem. Nil: those answer 503.
	CreditCodes CreditCodes
}

// Check is one readiness check of GET /readyz.
type Check struct {
	// Name is how /readyz names the check (store, registry, redis…).
	Name string
	// Fatal: when it fails the node should get no traffic (503). Otherwise
	// the node serves without it and /readyz says "degraded".
	Fatal bool
	// Run returns nil when the check holds; its error says why not. It
	// should be fast and must be safe for concurrent use.
	Run func(ctx context.Context) error
}

// readyTimeout bounds one readiness check.
const readyTimeout = 5 * time.Second

// realm is sent in WWW-Authenticate with every 401.
const realm = `Bearer realm="tollgate-admin"`

// Server is the admin API. Its handler is safe for concurrent use.
type Server struct {
	cfg      Config
	reg      *sites.Registry
	checks   []Check
	log      *slog.Logger
	tokenSum [sha256.Size]byte
	rates    *rates // nil: no request-rate limit
	requests *prometheus.CounterVec
	mux      *http.ServeMux // the private listener's routes
	api      *http.ServeMux // the tenant API listener's
	handler  http.Handler
	apiHdl   http.Handler
	// rules is each /v1 pattern's access rule (access.go).
	rules map[string]rule

	usageReader UsageReader
	siteUsage   SiteUsageReader
	gitea       GiteaPushes
	hookSecret  string
	storage     StorageReader
	certLister  CertLister
	accounts    Accounts
	backups     Backups
	publishing  PublishStatus
	payments    Payments
	invoicing   Invoicing
	coupons     Coupons
	tokens      Tokens
	domainProof DomainProof
	credits     Credits
	codes       CreditCodes
	topUps      TopUps
}

// StorageReader reports the bytes sites and orgs store.
type StorageReader interface {
	Storage(org, site string) int64
	OrgStorage(org string) int64
}

// New builds the admin API over reg. It registers its metrics on
// opts.Metrics, so call it once per registry.
func New(cfg Config, reg *sites.Registry, opts Options) (*Server, error) {
	cfg.Defaults()
	errs := []error{cfg.Validate()}
	if reg == nil {
		errs = append(errs, errors.New("admin: the registry is nil"))
	}
	if opts.Metrics == nil {
		errs = append(errs, errors.New("admin: Options.Metrics is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		reg:      reg,
		checks:   opts.Checks,
		log:      opts.Logger,
		tokenSum: sha256.Sum256([]byte(cfg.Token)),
		mux:      http.NewServeMux(),
		api:      http.NewServeMux(),
		rules:    map[string]rule{},

		usageReader: opts.Usage,
		siteUsage:   opts.SiteUsage,
		gitea:       opts.Gitea,
		hookSecret:  opts.GiteaWebhookSecret,
		storage:     opts.Storage,
		certLister:  opts.Certs,
		accounts:    opts.Accounts,
		backups:     opts.Backups,
		publishing:  opts.Publishing,
		payments:    opts.Payments,
		invoicing:   opts.Invoicing,
		coupons:     opts.Coupons,
		tokens:      opts.Tokens,
		domainProof: opts.DomainProof,
		credits:     opts.Credits,
		codes:       opts.CreditCodes,
		topUps:      opts.TopUps,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.requests = promauto.With(opts.Metrics).NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_admin_requests_total",
		Help: "Admin API requests by route pattern (\"unmatched\" for none) and status code.",
	}, []string{"route", "code"})
	s.rates = newRates(cfg, opts.Metrics)
	s.routes(promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{}))
	s.handler = s.chain(s.mux)
	s.apiHdl = s.chain(s.api)
	return s, nil
}

// Handler returns the whole admin API for the private listener: health,
// readiness, metrics, the Gitea hook and /v1, which takes the admin token
// and org tokens.
func (s *Server) Handler() http.Handler { return s.handler }

// APIHandler returns the tenant API for the listener operators may expose
// publicly ([server] api): /healthz and the /v1 routes, which take org
// tokens only (the admin token is refused like an unknown one), and the
// public plan catalog without a token.
func (s *Server) APIHandler() http.Handler { return s.apiHdl }

// routes registers every route. /v1 routes go through s.v1, on both
// listeners, with their access rule (access.go); the others are the
// private listener's, public.
func (s *Server) routes(metrics http.Handler) {
	health := func(w http.ResponseWriter, _ *http.Request) { writeText(w, "ok") }
	s.mux.HandleFunc("GET /healthz", health)
	s.api.HandleFunc("GET /healthz", health)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", metrics)

	s.v1("GET /v1/plans", s.listPlans, publicRoute)
	s.v1("GET /v1/plans/{name}", s.getPlan, publicRoute)
	s.v1("PUT /v1/plans/{name}", s.putPlan, operatorOnly)

	s.v1("GET /v1/orgs", s.listOrgs, operatorOnly)
	s.v1("POST /v1/orgs", s.createOrg, operatorOnly)
	s.v1("GET /v1/orgs/{id}", s.getOrg, tenant(tokens.Read, orgInPath))
	s.v1("PATCH /v1/orgs/{id}", s.updateOrg, operatorOnly)
	s.v1("DELETE /v1/orgs/{id}", s.deleteOrg, operatorOnly)
	s.v1("GET /v1/orgs/{id}/events", s.orgEvents, tenant(tokens.Read, orgInPath))
	s.v1("POST /v1/orgs/{id}/checkout", s.checkout, tenant(tokens.Billing, orgInPath))
	s.v1("POST /v1/orgs/{id}/portal", s.portal, tenant(tokens.Billing, orgInPath))
	s.v1("POST /v1/orgs/{id}/invoices", s.createInvoice, operatorOnly)
	s.v1("GET /v1/orgs/{id}/invoices", s.listInvoices, tenant(tokens.Read, orgInPath))
	s.v1("POST /v1/orgs/{id}/credits", s.grantCredit, operatorOnly)
	s.v1("GET /v1/orgs/{id}/credits", s.listCredits, tenant(tokens.Read, orgInPath))
	s.v1("POST /v1/orgs/{id}/credits/checkout", s.creditCheckout, tenant(tokens.Billing, orgInPath))
	s.v1("POST /v1/orgs/{id}/credits/redeem", s.redeemCreditCode, tenant(tokens.Billing, orgInPath))
	s.v1("POST /v1/credit-codes", s.createCreditCode, operatorOnly)
	s.v1("GET /v1/credit-codes", s.listCreditCodes, operatorOnly)
	s.v1("DELETE /v1/credit-codes/{code}", s.disableCreditCode, operatorOnly)
	s.v1("GET /v1/orgs/{id}/sites", s.listSites, tenant(tokens.Read, orgInPath))
	s.v1("POST /v1/orgs/{id}/sites", s.createSite, tenant(tokens.Write, orgInPath))
	s.v1("POST /v1/orgs/{id}/tokens", s.createToken, tenant(tokens.Admin, orgInPath))
	s.v1("GET /v1/orgs/{id}/tokens", s.listTokens, tenant(tokens.Admin, orgInPath))
	s.v1("DELETE /v1/orgs/{id}/tokens/{token_id}", s.revokeToken, tenant(tokens.Admin, orgInPath))

	s.v1("GET /v1/sites/{id}", s.getSite, tenant(tokens.Read, siteInPath))
	s.v1("PATCH /v1/sites/{id}", s.updateSite, tenant(tokens.Write, siteInPath))
	s.v1("DELETE /v1/sites/{id}", s.deleteSite, tenant(tokens.Write, siteInPath))
	s.v1("POST /v1/sites/{id}/domains", s.attachDomain, tenant(tokens.Write, siteInPath))

	s.v1("GET /v1/domains/{domain}", s.getDomain, tenant(tokens.Read, domainInPath))
	s.v1("DELETE /v1/domains/{domain}", s.detachDomain, tenant(tokens.Write, domainInPath))

	s.v1("POST /v1/coupons", s.createCoupon, operatorOnly)
	s.v1("GET /v1/coupons", s.listCoupons, operatorOnly)

	s.v1("GET /v1/usage", s.usage, tenant(tokens.Read, orgInQuery))
	s.v1("GET /v1/certs", s.certs, operatorOnly)
	s.v1("GET /v1/backup", s.backup, operatorOnly)
	s.v1("POST /v1/import", s.importRecords, operatorOnly)
	s.v1("GET /v1/export", s.export, operatorOnly)
	s.v1("GET /debug/pprof/{name}", s.pprofProfile, operatorOnly)

	s.mux.HandleFunc("POST /hooks/gitea", func(w http.ResponseWriter, r *http.Request) {
		if err := s.giteaHook(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

// v1 registers an authenticated, rate-limited route on both listeners;
// its handler returns its error, answered by s.fail.
func (s *Server) v1(pattern string, h func(w http.ResponseWriter, r *http.Request) error, a rule) {
	s.rules[pattern] = a
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { s.serveV1(w, r, h, a, false) })
	s.api.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { s.serveV1(w, r, h, a, true) })
}

// serveV1 authenticates r (api: on the tenant API listener), takes its
// token from the rate limit, confines a tenant's request to its org, and
// runs h.
func (s *Server) serveV1(w http.ResponseWriter, r *http.Request, h func(w http.ResponseWriter, r *http.Request) error, a rule, api bool) {
	c, sum, err := s.authenticate(r, api)
	if !s.rates.allow(w, r, c != nil, &sum) {
		return
	}
	if err == nil && c == nil && !a.public {
		err = errUnauthorized
	}
	if errors.Is(err, errUnauthorized) {
		w.Header().Set("WWW-Authenticate", realm)
	}
	if err == nil && c != nil && !c.operator {
		err = s.confine(r, &c.token, a)
	}
	if err == nil {
		err = h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
	if err != nil {
		s.fail(w, r, err)
	}
}

// chain wraps the mux in the steps every request takes, outermost first.
func (s *Server) chain(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w, r: r}
		// 1. Count the request by route pattern (bounded) and status, and
		//    audit writes. Runs last, once the status is known.
		defer func() { s.observe(rec, r) }()
		// 2. A panicking handler answers 500 instead of dropping the connection.
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.fail(rec, r, fmt.Errorf("admin: panic: %v", v))
			}
		}()
		// 3. Route. The mux's own plain-text 404 and 405 are turned into
		//    problems by rec; /v1 handlers check the token themselves (s.v1).
		mux.ServeHTTP(rec, r)
	})
}

func (s *Server) observe(rec *recorder, r *http.Request) {
	code := rec.status
	if code == 0 {
		code = http.StatusOK
	}
	route := r.Pattern // set by the mux on r; empty when nothing matched
	if route == "" {
		route = "unmatched"
	}
	s.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	if r.Method != http.MethodGet && r.Method != http.MethodHead && code != http.StatusUnauthorized {
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "admin: write",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", code), slog.String("remote", r.RemoteAddr))
	}
}

// fail answers err as a problem. Internal errors are logged, never sent.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	p, internal := problemFor(err)
	if internal {
		s.log.LogAttrs(r.Context(), slog.LevelError, "admin: internal error",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("err", err))
	}
	writeProblem(w, p)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var fatal, degraded []string
	for _, c := range s.checks {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		err := c.Run(ctx)
		cancel()
		if err == nil {
			continue
		}
		if c.Fatal {
			fatal = append(fatal, c.Name)
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: not ready", slog.String("check", c.Name), slog.Any("err", err))
		} else {
			degraded = append(degraded, c.Name+": "+err.Error())
		}
	}
	switch {
	case len(fatal) > 0:
		// The reasons are logged; the body names the failing checks.
		s.fail(w, r, fmt.Errorf("%w: failing checks: %s", errNotReady, strings.Join(append(fatal, degradedNames(degraded)...), ", ")))
	case len(degraded) > 0:
		writeText(w, "ready, degraded: "+strings.Join(degraded, "; "))
	default:
		writeText(w, "ready")
	}
}

// degradedNames keeps the check names of "name: reason" entries.
func degradedNames(entries []string) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i], _, _ = strings.Cut(e, ": ")
	}
	return out
}

// decode reads the JSON body of r into v: at most MaxBodyBytes, one object, no
// unknown fields. Its errors map to 400, 413 or 415 in problemFor.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != contentTypeJSON && !strings.HasSuffix(mt, "+json")) {
			return fmt.Errorf("%w: Content-Type %q; send %s", errMediaType, ct, contentTypeJSON)
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return badRequest("the body must hold a single JSON object")
	}
	return nil
}

// decodeError turns a json.Decoder error into a 400 (or keeps the 413) with a
// message meant for the API user.
func decodeError(err error) error {
	var (
		tooBig *http.MaxBytesError
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooBig):
		return err
	case errors.Is(err, io.EOF):
		return badRequest("the request body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON: unexpected end of the body")
	case errors.As(err, &syntax):
		return badRequest("malformed JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("the body must be a JSON object, not %s", typ.Value)
		}
		return badRequest("%s: expected %s, got %s", typ.Field, typ.Type, typ.Value)
	default: // unknown field, or a field's own UnmarshalJSON refusing it
		return badRequest("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

// writeJSON sends v with the given status.
func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}

func writeText(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, s+"\n")
}

// recorder remembers the status for the metric, and replaces the mux's
// plain-text 404 and 405 (sent when no pattern matched) with problems, keeping
// the Allow header of a 405.
type recorder struct {
	http.ResponseWriter
	r       *http.Request
	status  int
	swallow bool // the mux's own body is being replaced: drop its writes
}

func (rec *recorder) WriteHeader(code int) {
	if rec.status != 0 {
		rec.ResponseWriter.WriteHeader(code) // let net/http report the superfluous call
		return
	}
	rec.status = code
	if rec.r.Pattern == "" && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		rec.swallow = true
		err := errNoRoute
		if code == http.StatusMethodNotAllowed {
			err = errMethod
		}
		p, _ := problemFor(err)
		writeProblem(rec.ResponseWriter, p)
		return
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.swallow {
		return len(b), nil
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }
