// Package stripe keeps accounts in step with Stripe: signed webhook events
// in become account changes (billing.Change); egress beyond each org's
// quota goes out as billing meter events from a persistent outbox.
package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/billing/meterevent"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/outbox"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// Accounts is what Stripe events change. *billing.Billing implements it.
type Accounts interface {
	// Apply changes an org's account (see billing.Change); billing.ErrStale and billing.ErrTransition are expected outcomes.
	Apply(ctx context.Context, org string, c billing.Change) (sites.Org, error)
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

var _ Accounts = (*billing.Billing)(nil)

// Options are Stripe's collaborators.
type Options struct {
	Accounts Accounts              // required
	Store    Store                 // required: event ids, report cursors, the meter event outbox
	Usage    meter.Reader          // nil: no overage reporting
	Metrics  prometheus.Registerer // required
	Logger   *slog.Logger          // default slog.Default()
	Now      func() time.Time      // default time.Now; processed-at times and every reporting decision
	// HTTPClient calls the Stripe API. Default: a 30s timeout. Tests wrap
	// its transport to see what is sent.
	HTTPClient *http.Client
	// EventIDs remembers processed webhook event ids where every node of a
	// cluster sees them (*store.RedisKV), so a redelivery to another node
	// is a duplicate too. Nil: the node's own Store.
	EventIDs EventIDs
	// Plans lets Checkout and Portal make payment links (checkout.go);
	// nil: they answer ErrNotConfigured.
	Plans Plans
	// Hooks queues coupon.cashed when a Stripe discount is created
	// (discounts.go); nil: no hook.
	Hooks Emitter
	// Credits receives prepaid credit top-ups (topup.go); nil: TopUp
	// answers ErrNotConfigured and a paid top-up answers 500 (retried).
	Credits Credits
}

// Store is what Stripe keeps on this node: the meter event outbox, each
// org's report cursor and, without EventIDs, the processed webhook event
// ids. *store.Bolt implements it.
type Store interface {
	outbox.Store
	// Get returns the value of key in bucket, nil when either is missing.
	Get(ctx context.Context, bucket, key string) ([]byte, error)
	// Scan calls fn with every key and value of bucket, in key order.
	Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error
	// Apply writes ops in one transaction: all or none.
	Apply(ctx context.Context, ops ...store.Op) error
}

// EventIDs is a shared set of marks with an expiry. *store.RedisKV
// implements it.
type EventIDs interface {
	Marked(ctx context.Context, ns, id string) (bool, error)
	Mark(ctx context.Context, ns, id string, value []byte, ttl time.Duration) error
}

// Stripe connects accounts to Stripe: its webhook (ServeHTTP) turns signed
// Stripe events into account changes, and Run reports egress beyond each
// org's quota as billing meter events. See ServeHTTP and Run.
type Stripe struct {
	cfg   billing.StripeConfig
	acc   Accounts
	st    Store
	ob    *meterOutbox
	ids   EventIDs // nil: event ids in st
	usage meter.Reader
	log   *slog.Logger
	now   func() time.Time
	// events posts meter events; nil when reporting is off (no secret key
	// or no usage reader).
	events *meterevent.Client
	// links makes Checkout and portal sessions; nil without a secret key
	// or Options.Plans.
	links *links
	// api creates operator invoices and coupons (invoices.go, coupons.go);
	// nil without a secret key.
	api   *api
	hooks Emitter // nil: no coupon.cashed
	// credits is the prepaid credit ledger; nil without Options.Credits.
	credits Credits

	hookMu   sync.Mutex // serializes webhook processing: check id, apply, record
	webhooks *prometheus.CounterVec

	passMu                sync.Mutex // serializes reporting passes
	sent, retry, dropped  prometheus.Counter
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
	// bucketOldOutbox: meter event identifier → meterEntry without its id,
	// as tollgate queued them before the outbox package; New moves them
	// into the outbox.
	bucketOldOutbox = "stripe_outbox"
)

// New builds the webhook handler and the overage reporter and opens the
// meter event outbox. Meter events left pending by a previous process are
// sent by Run.
func New(cfg billing.StripeConfig, opts Options) (*Stripe, error) {
	cfg.Defaults()
	errs := []error{cfg.Validate()}
	if !cfg.Enabled() {
		errs = append(errs, errors.New("billing.stripe: neither secret_key nor webhook_secret is set"))
	}
	if opts.Accounts == nil || opts.Store == nil || opts.Metrics == nil {
		errs = append(errs, errors.New("stripe: Options.Accounts, Store and Metrics are required"))
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
	s := &Stripe{cfg: cfg, acc: opts.Accounts, st: opts.Store, ids: opts.EventIDs, usage: opts.Usage, log: opts.Logger, now: opts.Now,
		hooks: opts.Hooks, credits: opts.Credits, baseBackoff: cfg.ReportInterval, maxRetry: time.Hour, done: make(chan struct{})}
	if cfg.SecretKey != "" {
		backend := stripego.GetBackendWithConfig(stripego.APIBackend, &stripego.BackendConfig{
			URL:        stripego.String(cfg.APIBase),
			HTTPClient: opts.HTTPClient,
			// The outbox retries with backoff and survives restarts; the
			// library's own immediate retries would only delay a pass (and
			// a tenant waiting for a payment link retries itself).
			MaxNetworkRetries: stripego.Int64(0),
			LeveledLogger:     stripeLogger{opts.Logger},
		})
		s.links = newLinks(opts.Plans, backend, cfg.SecretKey)
		s.api = newAPI(opts.Plans, backend, cfg.SecretKey)
		if opts.Usage != nil {
			s.events = &meterevent.Client{B: backend, Key: cfg.SecretKey}
		} else {
			s.log.Warn("billing.stripe: no usage reader (meter off); overage is not reported to Stripe")
		}
	}

	ob, err := outbox.New[meterEntry](outbox.Config{Store: opts.Store, Box: meterBox, Queues: []string{meterQueue},
		Metrics: opts.Metrics, Names: meterNames, Logger: opts.Logger, Now: opts.Now, Backoff: s.backoff, Remember: meterRemember})
	if err != nil {
		return nil, fmt.Errorf("stripe: %w", err)
	}
	s.ob = ob
	s.sent, s.retry, s.dropped = ob.Results()
	if err := s.adoptOldOutbox(context.Background()); err != nil {
		return nil, fmt.Errorf("stripe: meter events of the old outbox: %w", err)
	}

	f := promauto.With(opts.Metrics)
	s.webhooks = f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_stripe_webhooks_total",
		Help: "Stripe webhook deliveries by outcome (applied, duplicate, stale, ignored, bad_signature, bad_request, unknown_org, unknown_plan, invalid, error)."},
		[]string{"outcome"})
	for _, o := range webhookOutcomes {
		s.webhooks.WithLabelValues(o)
	}
	return s, nil
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
