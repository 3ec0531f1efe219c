package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/billing/meterevent"
	"github.com/stripe/stripe-go/v76/webhook"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
	bolt "go.etcd.io/bbolt"
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
}

// Defaults of [billing.stripe].
const (
	defaultWebhookPath    = "/stripe/webhook"
	defaultMeterEventName = "tollgate_egress_overage"
)

// Enabled reports whether Stripe is configured at all.
func (c StripeConfig) Enabled() bool { return c.SecretKey != "" || c.WebhookSecret != "" }

// Defaults fills unset fields.
func (c *StripeConfig) Defaults() {
	if c.WebhookPath == "" {
		c.WebhookPath = defaultWebhookPath
	}
	if c.APIBase == "" {
		c.APIBase = stripe.APIURL
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
		c.Tolerance = webhook.DefaultTolerance
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
	return errors.Join(errs...)
}

// Accounts is what Stripe events change. *Billing implements it.
type Accounts interface {
	// Apply changes an org's account (see Change); ErrStale and ErrTransition are expected outcomes.
	Apply(ctx context.Context, org string, c Change) (sites.Org, error)
	// OrgByCustomer finds the org linked to a Stripe customer id.
	OrgByCustomer(customer string) (org string, ok bool)
	// OrgExists reports whether an org id exists (checkout's client_reference_id).
	OrgExists(org string) bool
	// PlanExists reports whether a plan name exists.
	PlanExists(plan string) bool
	// DefaultPlan is the plan cancelled subscriptions fall back to.
	DefaultPlan() string
	// Quota is the org's egress quota for the current plan in bytes (0: unlimited) and its Stripe customer ("" if none), for overage reporting.
	Quota(org string) (egressBytes int64, customer string)
	// Orgs lists org ids (for overage reporting).
	Orgs() []string
}

var _ Accounts = (*Billing)(nil)

// StripeOptions are Stripe's collaborators.
type StripeOptions struct {
	Accounts Accounts              // required
	Store    *store.Bolt           // required: event ids, report cursors, the meter event outbox
	Usage    meter.Reader          // nil: no overage reporting
	Metrics  prometheus.Registerer // required
	Logger   *slog.Logger          // default slog.Default()
	Now      func() time.Time      // default time.Now; processed-at times and every reporting decision
	// HTTPClient calls the Stripe API. Default: a 30s timeout. Tests wrap
	// its transport to see what is sent.
	HTTPClient *http.Client
}

// Stripe connects accounts to Stripe: its webhook (ServeHTTP) turns signed
// Stripe events into account changes, and Run reports egress beyond each
// org's quota as billing meter events. See ServeHTTP and Run.
type Stripe struct {
	cfg   StripeConfig
	acc   Accounts
	st    *store.Bolt
	usage meter.Reader
	log   *slog.Logger
	now   func() time.Time
	// events posts meter events; nil when reporting is off (no secret key
	// or no usage reader).
	events *meterevent.Client

	hookMu   sync.Mutex // serializes webhook processing: check id, apply, record
	webhooks *prometheus.CounterVec

	passMu                sync.Mutex // serializes reporting passes
	sent, retry, dropped  prometheus.Counter
	pending               atomic.Int64
	baseBackoff, maxRetry time.Duration

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run returns
}

// Buckets of Stripe's state in the store.
const (
	// bucketStripeEvents: event id → stripeEventRecord, so a redelivered
	// event changes nothing. Pruned after stripeEventRetention.
	bucketStripeEvents = "stripe_events"
	// bucketStripeCursor: org → the end of the last hour reported (RFC 3339).
	bucketStripeCursor = "stripe_report_cursor"
	// bucketStripeOutbox: meter event identifier → meterEntry, until Stripe
	// accepted it.
	bucketStripeOutbox = "stripe_outbox"
)

// stripeEventRetention is how long processed event ids are remembered:
// well beyond Stripe's 3 days of retries and manual resends of recent
// events. An older event delivered again is processed again; its
// StripeEventAt makes it stale if the org has seen anything newer.
const stripeEventRetention = 30 * 24 * time.Hour

// maxWebhookBody bounds a webhook request body (Stripe events are a few
// KiB; a subscription with many items stays far below).
const maxWebhookBody = 1 << 20

// Webhook outcomes: the bounded values of the outcome label and, for the
// first four, of the response's "outcome".
const (
	outcomeApplied      = "applied"       // the change is applied (or was already: no change)
	outcomeDuplicate    = "duplicate"     // the event id was processed before
	outcomeStale        = "stale"         // older than what the org reflects
	outcomeIgnored      = "ignored"       // not for us, or a transition the lifecycle refuses
	outcomeBadSignature = "bad_signature" // 400: missing, invalid or too old Stripe-Signature
	outcomeBadRequest   = "bad_request"   // 400/405/413: not a POST, too big, not an event
	outcomeUnknownOrg   = "unknown_org"   // 422: no org for the customer or client_reference_id (retried)
	outcomeUnknownPlan  = "unknown_plan"  // 422: the price names no existing plan (retried)
	outcomeInvalid      = "invalid"       // 422: the account refused the values (e.g. a malformed customer id)
	outcomeError        = "error"         // 500: the store failed (retried)
)

var webhookOutcomes = []string{outcomeApplied, outcomeDuplicate, outcomeStale, outcomeIgnored, outcomeBadSignature,
	outcomeBadRequest, outcomeUnknownOrg, outcomeUnknownPlan, outcomeInvalid, outcomeError}

// NewStripe builds the webhook handler and the overage reporter and opens
// their buckets. Meter events left pending by a previous process are sent
// by Run.
func NewStripe(cfg StripeConfig, opts StripeOptions) (*Stripe, error) {
	cfg.Defaults()
	errs := []error{cfg.Validate()}
	if !cfg.Enabled() {
		errs = append(errs, errors.New("billing.stripe: neither secret_key nor webhook_secret is set"))
	}
	if opts.Accounts == nil || opts.Store == nil || opts.Metrics == nil {
		errs = append(errs, errors.New("billing: StripeOptions.Accounts, Store and Metrics are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	s := &Stripe{cfg: cfg, acc: opts.Accounts, st: opts.Store, usage: opts.Usage, log: opts.Logger, now: opts.Now,
		baseBackoff: cfg.ReportInterval, maxRetry: time.Hour, done: make(chan struct{})}
	if cfg.SecretKey != "" && opts.Usage != nil {
		backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
			URL:        stripe.String(cfg.APIBase),
			HTTPClient: opts.HTTPClient,
			// The outbox retries with backoff and survives restarts; the
			// library's own immediate retries would only delay a pass.
			MaxNetworkRetries: stripe.Int64(0),
			LeveledLogger:     stripeLogger{opts.Logger},
		})
		s.events = &meterevent.Client{B: backend, Key: cfg.SecretKey}
	} else if cfg.SecretKey != "" {
		s.log.Warn("billing.stripe: no usage reader (meter off); overage is not reported to Stripe")
	}

	err := s.st.Update(context.Background(), func(tx *bolt.Tx) error {
		for _, b := range []string{bucketStripeEvents, bucketStripeCursor, bucketStripeOutbox} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		s.pending.Store(int64(tx.Bucket([]byte(bucketStripeOutbox)).Stats().KeyN))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("billing: stripe buckets: %w", err)
	}

	f := promauto.With(opts.Metrics)
	s.webhooks = f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_stripe_webhooks_total",
		Help: "Stripe webhook deliveries by outcome (applied, duplicate, stale, ignored, bad_signature, bad_request, unknown_org, unknown_plan, invalid, error)."},
		[]string{"outcome"})
	for _, o := range webhookOutcomes {
		s.webhooks.WithLabelValues(o)
	}
	events := f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_stripe_meter_events_total",
		Help: "Overage meter event sends by result: sent (accepted by Stripe), retry (failed, kept for a later attempt), dropped (too old for Stripe to accept)."},
		[]string{"result"})
	s.sent, s.retry, s.dropped = events.WithLabelValues("sent"), events.WithLabelValues("retry"), events.WithLabelValues("dropped")
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_stripe_outbox_pending",
		Help: "Overage meter events waiting in the outbox to be sent to Stripe."}, func() float64 { return float64(s.pending.Load()) })
	return s, nil
}

// stripeEventRecord is a processed event in bucketStripeEvents.
type stripeEventRecord struct {
	At      time.Time `json:"at"` // processed at
	Type    string    `json:"type"`
	Org     string    `json:"org,omitempty"`
	Outcome string    `json:"outcome"`
}

// webhookError is a delivery answered with a problem.
type webhookError struct {
	status  int
	outcome string
	detail  string
}

func (e *webhookError) Error() string { return e.detail }

func unprocessable(outcome, format string, args ...any) *webhookError {
	return &webhookError{status: http.StatusUnprocessableEntity, outcome: outcome, detail: fmt.Sprintf(format, args...)}
}

// ServeHTTP is Stripe's webhook endpoint. It accepts a POST of at most
// 1 MiB whose Stripe-Signature verifies with the webhook secret within the
// tolerance (400 otherwise), and answers 200 with
//
//	{"received":true,"outcome":"applied|duplicate|stale|ignored"}
//
// once the event's effect is in the store, or a problem+json: 422 when the
// event names an org or a plan tollgate does not know (yet: Stripe retries
// for 3 days, meanwhile checkout may link the customer or the operator may
// create the plan), 500 when the store fails. Events are processed one at
// a time; each id is recorded with its outcome after its change is
// confirmed, so a redelivery answers "duplicate" and changes nothing (a
// crash in between re-applies the same change, which is no change).
//
// Mapping (every change: actor "stripe", ref = event id, ordered by the
// event's created time except a checkout's link: an event older than what
// the org reflects is "stale"):
//
//	checkout.session.completed       client_reference_id (org) → linked to customer
//	customer.subscription.created    plan from the first item's price lookup_key
//	customer.subscription.updated      (else its metadata tollgate_plan); status
//	                                   active, trialing → same; past_due, unpaid →
//	                                   past_due; canceled, incomplete_expired → as
//	                                   deleted; incomplete → ignored until paid
//	customer.subscription.deleted    default plan, state active
//	invoice.paid                     state active
//	invoice.payment_failed           state past_due
//
// The org of a subscription or invoice is the one linked to its customer,
// else (subscriptions) its metadata tollgate_org, which links it. A state
// change the lifecycle refuses (e.g. trialing for an active org) leaves the
// state and applies the rest; with nothing else to apply the event is
// "ignored". Other event types are "ignored".
func (s *Stripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, &webhookError{http.StatusMethodNotAllowed, outcomeBadRequest, "the Stripe webhook accepts POST only"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.fail(w, &webhookError{http.StatusRequestEntityTooLarge, outcomeBadRequest, fmt.Sprintf("the body exceeds %d bytes", tooBig.Limit)})
		} else {
			s.fail(w, &webhookError{http.StatusBadRequest, outcomeBadRequest, "reading the body: " + err.Error()})
		}
		return
	}
	// The API version check is off: the endpoint's version is chosen in the
	// Stripe dashboard, not by stripe-go's pin (2023-10-16), and the few
	// fields read here (decoded leniently in stripeObject) are the same in
	// every version since. Rejecting other versions would drop every event
	// after a dashboard upgrade.
	ev, err := webhook.ConstructEventWithOptions(body, r.Header.Get("Stripe-Signature"), s.cfg.WebhookSecret,
		webhook.ConstructEventOptions{Tolerance: s.cfg.Tolerance, IgnoreAPIVersionMismatch: true})
	switch {
	case errors.Is(err, webhook.ErrNotSigned), errors.Is(err, webhook.ErrInvalidHeader),
		errors.Is(err, webhook.ErrNoValidSignature), errors.Is(err, webhook.ErrTooOld):
		s.fail(w, &webhookError{http.StatusBadRequest, outcomeBadSignature, "Stripe-Signature: " + err.Error()})
		return
	case err != nil:
		s.fail(w, &webhookError{http.StatusBadRequest, outcomeBadRequest, "the body is not a Stripe event"})
		return
	case ev.ID == "" || ev.Type == "" || ev.Data == nil:
		s.fail(w, &webhookError{http.StatusBadRequest, outcomeBadRequest, "the event has no id, type or data"})
		return
	}
	// The effect is recorded even if Stripe hangs up meanwhile.
	outcome, werr := s.process(context.WithoutCancel(r.Context()), &ev)
	if werr != nil {
		s.fail(w, werr)
		return
	}
	s.webhooks.WithLabelValues(outcome).Inc()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(struct {
		Received bool   `json:"received"`
		Outcome  string `json:"outcome"`
	}{true, outcome})
}

// fail counts and answers a problem (RFC 7807), as the admin API does.
func (s *Stripe) fail(w http.ResponseWriter, e *webhookError) {
	s.webhooks.WithLabelValues(e.outcome).Inc()
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail,omitempty"`
	}{"about:blank", http.StatusText(e.status), e.status, e.detail})
}

// process handles a verified event: duplicate check, mapping, Apply, record.
func (s *Stripe) process(ctx context.Context, ev *stripe.Event) (string, *webhookError) {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	log := s.log.With(slog.String("event", ev.ID), slog.String("type", string(ev.Type)))
	seen := false
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		seen = tx.Bucket([]byte(bucketStripeEvents)).Get([]byte(ev.ID)) != nil
		return nil
	})
	if err != nil {
		log.Error("stripe webhook: event ids not readable", slog.Any("err", err))
		return "", &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	}
	if seen {
		log.Debug("stripe webhook: duplicate delivery")
		return outcomeDuplicate, nil
	}

	org, c, skip, werr := s.change(ev)
	if werr != nil {
		log.Warn("stripe webhook: event not applicable yet; Stripe will retry", slog.String("org", org),
			slog.String("outcome", werr.outcome), slog.String("reason", werr.detail))
		return "", werr
	}
	outcome := outcomeApplied
	if skip != "" {
		outcome = outcomeIgnored
		level := slog.LevelInfo
		if skip == skipUnhandled {
			level = slog.LevelDebug // the endpoint may be subscribed to more types than it needs
		}
		log.Log(ctx, level, "stripe webhook: event ignored", slog.String("org", org), slog.String("reason", skip))
	} else if outcome, werr = s.apply(ctx, log, org, c); werr != nil {
		return "", werr
	}

	rec, _ := json.Marshal(stripeEventRecord{At: s.now().UTC(), Type: string(ev.Type), Org: org, Outcome: outcome})
	if err := s.st.Apply(ctx, store.Put(bucketStripeEvents, ev.ID, rec)); err != nil {
		// Stripe retries; applying the same change again is no change.
		log.Error("stripe webhook: event applied but its id not recorded", slog.Any("err", err))
		return "", &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	}
	return outcome, nil
}

// apply applies c and maps Apply's errors to outcomes.
func (s *Stripe) apply(ctx context.Context, log *slog.Logger, org string, c Change) (string, *webhookError) {
	_, err := s.acc.Apply(ctx, org, c)
	if errors.Is(err, ErrTransition) && (c.Plan != "" || c.StripeCustomer != "") {
		// The lifecycle refuses the state (e.g. a trial starting for an
		// active org); the plan and the customer still apply.
		log.Info("stripe webhook: state change refused, applying the rest", slog.String("org", org), slog.Any("reason", err))
		c.State = ""
		_, err = s.acc.Apply(ctx, org, c)
	}
	switch {
	case err == nil:
		log.Info("stripe webhook: applied", slog.String("org", org), slog.String("state", c.State),
			slog.String("plan", c.Plan), slog.String("customer", c.StripeCustomer))
		return outcomeApplied, nil
	case errors.Is(err, ErrStale):
		log.Info("stripe webhook: stale event, no change", slog.String("org", org), slog.Any("reason", err))
		return outcomeStale, nil
	case errors.Is(err, ErrTransition):
		log.Info("stripe webhook: state change refused by the lifecycle, no change", slog.String("org", org), slog.Any("reason", err))
		return outcomeIgnored, nil
	case errors.Is(err, sites.ErrNotFound):
		return "", unprocessable(outcomeUnknownOrg, "org %q does not exist", org)
	case errors.Is(err, sites.ErrInvalid):
		log.Warn("stripe webhook: change refused", slog.String("org", org), slog.Any("err", err))
		return "", unprocessable(outcomeInvalid, "org %q: %v", org, err)
	default:
		log.Error("stripe webhook: applying the change failed", slog.String("org", org), slog.Any("err", err))
		return "", &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	}
}

// stripeObject holds the few fields of data.object that are read, for any
// of the handled event types.
type stripeObject struct {
	ID                string            `json:"id"`
	Customer          stripeID          `json:"customer"`
	ClientReferenceID string            `json:"client_reference_id"`
	Status            string            `json:"status"`
	Metadata          map[string]string `json:"metadata"`
	Items             struct {
		Data []struct {
			Price *struct {
				ID        string            `json:"id"`
				LookupKey string            `json:"lookup_key"`
				Metadata  map[string]string `json:"metadata"`
			} `json:"price"`
		} `json:"data"`
	} `json:"items"`
}

// stripeID is an expandable reference: an id, null, or an object with an id.
type stripeID string

func (id *stripeID) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		*id = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var v string
		err := json.Unmarshal(b, &v)
		*id = stripeID(v)
		return err
	}
	var v struct {
		ID string `json:"id"`
	}
	err := json.Unmarshal(b, &v)
	*id = stripeID(v.ID)
	return err
}

// Metadata keys set on Stripe objects by the operator's checkout.
const (
	metaOrg  = "tollgate_org"  // on a subscription: the org it pays for
	metaPlan = "tollgate_plan" // on a price without lookup_key: the plan it buys
)

// skipUnhandled is the reason an event of another type is ignored.
const skipUnhandled = "event type not handled"

// change maps an event to the org and Change it asks for; skip is the
// reason when there is nothing to do.
func (s *Stripe) change(ev *stripe.Event) (org string, c Change, skip string, werr *webhookError) {
	c = Change{Actor: ActorStripe, Ref: ev.ID, StripeEventAt: time.Unix(ev.Created, 0).UTC()}
	typ := string(ev.Type)
	switch typ {
	case "checkout.session.completed", "customer.subscription.created", "customer.subscription.updated",
		"customer.subscription.deleted", "invoice.paid", "invoice.payment_failed":
	default:
		return "", c, skipUnhandled, nil
	}
	var obj stripeObject
	if err := json.Unmarshal(ev.Data.Raw, &obj); err != nil {
		return "", c, "", &webhookError{http.StatusBadRequest, outcomeBadRequest, "data.object: " + err.Error()}
	}
	customer := string(obj.Customer)

	switch typ {
	case "checkout.session.completed":
		org = obj.ClientReferenceID
		switch {
		case org == "":
			return "", c, "checkout session without client_reference_id (not started for an org)", nil
		case !s.acc.OrgExists(org):
			return org, c, "", unprocessable(outcomeUnknownOrg, "checkout session %s: client_reference_id %q is not an org", obj.ID, org)
		case customer == "":
			return org, c, "checkout session without customer", nil
		}
		// Linking is not ordered: the subscription's events are often
		// created a second before the session completes and, while the
		// customer was unknown, retried after it; ordered by this event
		// they would all be stale and the plan never applied.
		c.StripeCustomer, c.Cause, c.StripeEventAt = customer, "checkout completed", time.Time{}
		return org, c, "", nil

	case "invoice.paid", "invoice.payment_failed":
		var ok bool
		if org, ok = s.orgByCustomer(customer); !ok {
			return "", c, "", unprocessable(outcomeUnknownOrg, "invoice %s: customer %q is linked to no org", obj.ID, customer)
		}
		if typ == "invoice.paid" {
			c.State, c.Cause = sites.StateActive, "invoice paid"
		} else {
			c.State, c.Cause = sites.StatePastDue, "payment failed"
		}
		return org, c, "", nil
	}

	// Subscriptions.
	cancelled := typ == "customer.subscription.deleted"
	if !cancelled {
		switch obj.Status {
		case "active":
			c.State = sites.StateActive
		case "trialing":
			c.State = sites.StateTrialing
		case "past_due", "unpaid":
			c.State = sites.StatePastDue
		case "canceled", "incomplete_expired":
			cancelled = true
		case "incomplete":
			return "", c, fmt.Sprintf("subscription %s is incomplete (first payment pending): no change until it is active", obj.ID), nil
		default:
			return "", c, fmt.Sprintf("subscription %s: status %q is not mapped", obj.ID, obj.Status), nil
		}
	}
	org, ok := s.orgByCustomer(customer)
	if !ok {
		org = obj.Metadata[metaOrg]
		if org == "" || !s.acc.OrgExists(org) {
			return org, c, "", unprocessable(outcomeUnknownOrg,
				"subscription %s: customer %q is linked to no org and metadata %s names none (%q)", obj.ID, customer, metaOrg, org)
		}
		c.StripeCustomer = customer // link it
	}
	if cancelled {
		c.State, c.Plan, c.Cause = sites.StateActive, s.acc.DefaultPlan(), "subscription cancelled"
		return org, c, "", nil
	}
	plan, werr := s.subscriptionPlan(&obj)
	if werr != nil {
		return org, c, "", werr
	}
	c.Plan = plan
	c.Cause = fmt.Sprintf("subscription %s (%s)", strings.TrimPrefix(typ, "customer.subscription."), obj.Status)
	return org, c, "", nil
}

// orgByCustomer is Accounts.OrgByCustomer, except that no customer is no
// org (rather than any org without a customer).
func (s *Stripe) orgByCustomer(customer string) (string, bool) {
	if customer == "" {
		return "", false
	}
	return s.acc.OrgByCustomer(customer)
}

// subscriptionPlan is the plan the subscription's first price buys.
func (s *Stripe) subscriptionPlan(obj *stripeObject) (string, *webhookError) {
	if len(obj.Items.Data) == 0 || obj.Items.Data[0].Price == nil {
		return "", unprocessable(outcomeUnknownPlan, "subscription %s has no price", obj.ID)
	}
	price := obj.Items.Data[0].Price
	plan := price.LookupKey
	if plan == "" {
		plan = price.Metadata[metaPlan]
	}
	switch {
	case plan == "":
		return "", unprocessable(outcomeUnknownPlan, "price %s has neither a lookup_key nor metadata %s naming a plan", price.ID, metaPlan)
	case !s.acc.PlanExists(plan):
		return "", unprocessable(outcomeUnknownPlan, "price %s names plan %q, which does not exist; create it and Stripe's next retry applies the change", price.ID, plan)
	}
	return plan, nil
}

// stripeLogger sends stripe-go's own log lines to slog at debug level: the
// outcome of every call is logged by the caller with more context.
type stripeLogger struct{ l *slog.Logger }

func (l stripeLogger) Debugf(format string, v ...any) { l.logf(format, v...) }
func (l stripeLogger) Infof(format string, v ...any)  { l.logf(format, v...) }
func (l stripeLogger) Warnf(format string, v ...any)  { l.logf(format, v...) }
func (l stripeLogger) Errorf(format string, v ...any) { l.logf(format, v...) }

func (l stripeLogger) logf(format string, v ...any) {
	if l.l.Enabled(context.Background(), slog.LevelDebug) {
		l.l.Debug("stripe-go: " + fmt.Sprintf(format, v...))
	}
}
