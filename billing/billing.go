package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/ratelimit"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// Sites is what Billing needs of the registry. *sites.Registry implements it.
type Sites interface {
	Registry
	Snapshot() *sites.Snapshot
	OnChange(fn func(*sites.Snapshot, *sites.Delta))
	PutPlan(ctx context.Context, p sites.Plan) (bool, error)
	CreateOrg(ctx context.Context, o sites.Org) (sites.Org, error)
	// CreateOrgWith creates o and writes extra's records with it, in one
	// write.
	CreateOrgWith(ctx context.Context, o sites.Org, extra func(created sites.Org) []store.Op) (sites.Org, error)
}

// Scanner reads a bucket of a store. *store.Bolt and *store.RedisKV
// implement it.
type Scanner interface {
	Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error
}

// Store is this node's own storage, where Billing remembers the
// once-per-period hooks it fired. *store.Bolt implements it.
type Store interface {
	Scanner
	// Get returns the value of key in bucket, nil when either is missing.
	Get(ctx context.Context, bucket, key string) ([]byte, error)
	// Apply writes ops in one transaction: all or none.
	Apply(ctx context.Context, ops ...store.Op) error
}

// Emitter sends lifecycle hooks. *hooks.Hooks implements it.
type Emitter interface {
	Emit(ctx context.Context, e HookEvent) error
}

// StorageReader tells how many bytes orgs store (measured on this node).
// *meter.Meter implements it.
type StorageReader interface {
	// OrgStorage is one org's bytes (a publish decision).
	OrgStorage(org string) int64
	// StorageByOrgOf is the bytes of every org need reports true for,
	// read once per pass; ok is false while storage has not been measured
	// since start.
	StorageByOrgOf(need func(org string) bool) (byOrg map[string]int64, ok bool)
}

// Options are Billing's collaborators.
type Options struct {
	Sites Sites // required
	Store Store // required: ids of once-per-period hooks this node fired
	// Records is the store the registry writes to (it holds the account
	// history, written with each change): the bbolt file, or Redis in a
	// cluster. Default Store.
	Records Scanner
	// Usage gives every org's totals of the current period (flushed counters
	// of all nodes when it is Redis). Nil: no quota enforcement.
	Usage   meter.Reader
	Storage StorageReader // nil: storage quotas are not watched
	Hooks   Emitter       // nil: no hooks
	// Credits is the prepaid credit ledger (credit.go). Nil: orgs on
	// prepaid plans are not drawn down and Credit answers ErrNoLedger.
	Credits Credits
	// Codes keeps the redeemable credit codes (codes.go). Nil: no codes
	// (ErrNoLedger).
	Codes   credit.CodeStore
	Metrics prometheus.Registerer
	Logger  *slog.Logger
	Now     func() time.Time // default time.Now; tests inject a clock
}

// Billing keeps accounts and each org's access decision.
type Billing struct {
	cfg   Config
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	gates sync.Map    // org id → *access.Gate, for orgs in the registry
	noOrg access.Gate // the shared gate of ids that are no org: always Allow

	mu    sync.Mutex       // serializes evaluations
	usage map[string]int64 // org → egress of the current period, from the last evaluation
	// storage is org → bytes stored, from the last evaluation; nil while
	// not measured yet (compliance.go).
	storage map[string]int64
	prev    map[string]access.Decision // decisions of the last evaluation, for hooks on changes
	fired   map[string]bool            // ids of once-per-period hooks already emitted (cache of bucketFired)

	creditMu sync.Mutex // serializes drawdowns (credit.go)
	// codeTries limits tenants' credit code redemptions per org (codes.go).
	codeTries *ratelimit.Table
	codeKeys  ratelimit.Keys
	drawn     map[string]time.Time // org → end of the last hour drawn from its credit

	decisions *prometheus.GaugeVec
	evalErrs  prometheus.Counter

	life   sync.Mutex         // guards cancel and done (Start, Stop)
	cancel context.CancelFunc // ends the evaluations Start began
	done   chan struct{}      // closed when they have ended
}

// bucketFired remembers the once-per-period hooks this node emitted (id →
// time), so a restart does not repeat them.
const bucketFired = "billing_fired"

// New builds Billing and applies [[billing.plans]].
func New(ctx context.Context, cfg Config, opts Options) (*Billing, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Sites == nil || opts.Store == nil || opts.Metrics == nil {
		return nil, errors.New("billing: Options.Sites, Store and Metrics are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Records == nil {
		opts.Records = opts.Store
	}
	for _, p := range cfg.Plans {
		if _, err := opts.Sites.PutPlan(ctx, p.Plan()); err != nil {
			return nil, fmt.Errorf("billing.plans: %s: %w", p.Name, err)
		}
	}
	f := promauto.With(opts.Metrics)
	b := &Billing{cfg: cfg, opts: opts, log: opts.Logger, now: opts.Now,
		usage: map[string]int64{}, drawn: map[string]time.Time{}, prev: map[string]access.Decision{}, fired: map[string]bool{},
		codeTries: ratelimit.NewTable(ratelimit.MinSize, CodeTriesPerSecond, CodeTriesBurst), codeKeys: ratelimit.NewKeys(),
		decisions: f.NewGaugeVec(prometheus.GaugeOpts{Name: "tollgate_billing_orgs",
			Help: "Orgs by current enforcement decision (allow, throttle, block_*)."}, []string{"decision"}),
		evalErrs: f.NewCounter(prometheus.CounterOpts{Name: "tollgate_billing_evaluation_errors_total",
			Help: "Evaluations that could not read usage (decisions kept from the previous one)."}),
	}
	for _, d := range access.Decisions() {
		b.decisions.WithLabelValues(d.String())
	}
	// State changes (an operator's suspension, a Stripe event) apply to
	// the request path at once, without waiting for the next evaluation.
	opts.Sites.OnChange(b.decide)
	return b, nil
}

// Gate returns the org's gate; the same pointer for the life of the
// process. Gates exist for orgs in the registry only: for any other id it
// returns one shared gate that always allows (nothing is enforced on an org
// that does not exist), so ids a stranger can invent cost no memory. Ask
// again once the org exists.
func (b *Billing) Gate(org string) *access.Gate {
	if g, ok := b.gates.Load(org); ok {
		return g.(*access.Gate)
	}
	snap := b.opts.Sites.Snapshot()
	o := snap.Orgs.Get(org)
	if o == nil {
		return &b.noOrg
	}
	g, _ := b.gates.LoadOrStore(org, &access.Gate{})
	gate := g.(*access.Gate)
	b.mu.Lock()
	b.decideLocked(snap, o, gate)
	b.mu.Unlock()
	return gate
}

// decide recomputes, from s and the last usage read, the gates of the orgs
// d changed, or every known gate when d is nil or changed a plan.
func (b *Billing) decide(s *sites.Snapshot, d *sites.Delta) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d != nil && len(d.Plans) == 0 {
		for _, id := range orgsOf(s, d) {
			if g, ok := b.gates.Load(id); ok {
				b.decideGateLocked(s, id, g.(*access.Gate))
			}
		}
		return
	}
	b.gates.Range(func(k, v any) bool {
		b.decideGateLocked(s, k.(string), v.(*access.Gate))
		return true
	})
}

// orgsOf lists the orgs a change touched: its orgs, and the orgs of its
// sites and domains (which its sites and domains a plan includes depends on
// them); a deleted site's org is not known any more and waits for the next
// pass.
func orgsOf(s *sites.Snapshot, d *sites.Delta) []string {
	if len(d.Sites) == 0 && len(d.Domains) == 0 {
		return d.Orgs
	}
	out := slices.Clone(d.Orgs)
	for _, id := range d.Sites {
		if st := s.Sites.Get(id); st != nil {
			out = append(out, st.Org)
		}
	}
	for _, name := range d.Domains {
		if dm := s.Domains.Get(name); dm != nil {
			if st := s.Sites.Get(dm.Site); st != nil {
				out = append(out, st.Org)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (b *Billing) decideGateLocked(s *sites.Snapshot, id string, g *access.Gate) {
	if o := s.Orgs.Get(id); o != nil {
		b.decideLocked(s, o, g)
	} else {
		g.Set(access.Allow, 0) // deleted org: nothing routes to it anyway
	}
}

// decide computes an org's decision: its state first, then its egress
// against the plan.
func decide(o *sites.Org, p *sites.Plan, egress int64) (access.Decision, int64) {
	switch o.State {
	case sites.StateSuspended:
		return access.BlockSuspended, 0
	case sites.StateExpired:
		return access.BlockExpired, 0
	}
	if p == nil || p.EgressBytes <= 0 || p.Prepaid {
		return access.Allow, 0 // a prepaid plan's egress beyond its quota is drawn from credit
	}
	if p.HardLimitPercent > 0 && egress*100 >= p.EgressBytes*int64(p.HardLimitPercent) {
		return access.BlockQuota, 0
	}
	if egress >= p.EgressBytes && p.ThrottleBPS > 0 {
		return access.Throttle, p.ThrottleBPS
	}
	return access.Allow, 0
}

// decision is an org's decision: decide, then, for an org that would be
// served, the storage quota past its grace (compliance.go).
func (b *Billing) decision(o *sites.Org, p *sites.Plan, now time.Time) (access.Decision, int64) {
	d, bps := decide(o, p, b.usage[o.ID])
	if !d.Blocks() && b.storageBlocked(o, p, now) {
		return access.BlockStorage, 0
	}
	return d, bps
}

func (b *Billing) decideLocked(s *sites.Snapshot, o *sites.Org, g *access.Gate) access.Decision {
	now := b.now()
	p := s.Plans.Get(o.Plan)
	d, bps := b.decision(o, p, now)
	g.Set(d, bps)
	g.SetExcluded(b.excluded(s, o, p, now))
	return d
}

// Apply changes an org's account (see Change and the lifecycle in
// lifecycle.go), records the events, emits the matching hooks and applies
// the new decision at once.
func (b *Billing) Apply(ctx context.Context, org string, c Change) (sites.Org, error) {
	now := b.now()
	before := b.opts.Sites.Snapshot().Orgs.Get(org)
	o, events, err := apply(ctx, b.opts.Sites, now, org, c)
	if err != nil {
		return o, err
	}
	b.logged(ctx, before, &o, events)
	return o, nil
}

// hooksFor emits the hooks of one recorded event.
func (b *Billing) hooksFor(ctx context.Context, before, after *sites.Org, e Event) {
	if e.Field != "state" || e.From == e.To {
		return
	}
	data := map[string]any{"from": e.From, "to": e.To, "cause": e.Cause, "actor": e.Actor}
	id := func(typ string) string { return fmt.Sprintf("%s:%s:%d", typ, e.Org, e.At.UnixNano()) }
	if e.From == sites.StatePastDue {
		// The grace period ends: paid (active), expired or suspended.
		ended := map[string]any{"from": e.From, "to": e.To, "cause": e.Cause, "actor": e.Actor, "outcome": e.To}
		b.emit(ctx, HookEvent{ID: id("grace.ended"), Type: "grace.ended", Org: e.Org, At: e.At, Data: ended})
	}
	switch e.To {
	case sites.StatePastDue:
		data["grace_ends_at"] = after.GraceEndsAt
		if e.Cause != causeCreditExhausted { // credit.exhausted said it already: no payment failed
			b.emit(ctx, HookEvent{ID: id("payment.failed"), Type: "payment.failed", Org: e.Org, At: e.At, Data: data})
		}
		b.emit(ctx, HookEvent{ID: id("grace.started"), Type: "grace.started", Org: e.Org, At: e.At, Data: data})
	case sites.StateExpired:
		b.emit(ctx, HookEvent{ID: id("org.expired"), Type: "org.expired", Org: e.Org, At: e.At, Data: data})
	case sites.StateActive:
		if e.Actor == ActorStripe {
			b.emit(ctx, HookEvent{ID: id("payment.succeeded"), Type: "payment.succeeded", Org: e.Org, At: e.At, Data: data})
		}
		if e.From == sites.StatePastDue || e.From == sites.StateExpired || e.From == sites.StateSuspended {
			b.emit(ctx, HookEvent{ID: id("org.restored"), Type: "org.restored", Org: e.Org, At: e.At, Data: data})
		}
	}
}

func (b *Billing) emit(ctx context.Context, e HookEvent) {
	if b.opts.Hooks == nil {
		return
	}
	if err := b.opts.Hooks.Emit(ctx, e); err != nil {
		b.log.Error("hook not queued", slog.String("type", e.Type), slog.String("org", e.Org), slog.Any("err", err))
	}
}

// emitOnce emits a hook whose id identifies it for good (per org and
// period): the id is remembered in this node's own store (Options.Store),
// so the node emits it once, even across restarts. Each node of a cluster
// remembers on its own and emits the same id; receivers deduplicate on it.
func (b *Billing) emitOnce(ctx context.Context, e HookEvent) {
	if b.opts.Hooks == nil || b.fired[e.ID] {
		return
	}
	if v, _ := b.opts.Store.Get(ctx, bucketFired, e.ID); v == nil {
		b.emit(ctx, e)
		at, _ := e.At.MarshalText()
		if err := b.opts.Store.Apply(ctx, store.Put(bucketFired, e.ID, at)); err != nil {
			b.log.Warn("hook not remembered as fired", slog.String("id", e.ID), slog.Any("err", err))
		}
	}
	b.fired[e.ID] = true
}

// Events lists an org's account history, oldest first.
func (b *Billing) Events(ctx context.Context, org string) ([]Event, error) {
	var out []Event
	prefix := []byte(org + "/")
	err := b.opts.Records.Scan(ctx, bucketEvents, func(k, v []byte) error {
		if !bytes.HasPrefix(k, prefix) {
			return nil
		}
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("billing: event %s: %w", k, err)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}
