package billing

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/internal/pace"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// Start re-evaluates every org at once and then each EnforceInterval, in
// the background until Stop. It does not block; ctx only lends its values
// to the evaluations, its end does not stop them. Starting twice, or after
// Stop, starts nothing more.
func (b *Billing) Start(ctx context.Context) error {
	b.life.Lock()
	defer b.life.Unlock()
	if b.done != nil {
		return nil
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel, b.done = cancel, make(chan struct{})
	go func() {
		defer close(b.done)
		b.run(rctx)
	}()
	return nil
}

// Stop ends the evaluations: one in flight is abandoned (its reads fail and
// the decisions stay as they were). It waits for it to return until ctx
// ends. Safe before Start and more than once.
func (b *Billing) Stop(ctx context.Context) error {
	b.life.Lock()
	if b.done == nil {
		b.done = make(chan struct{}) // a Start after Stop starts nothing
		close(b.done)
	}
	if b.cancel != nil {
		b.cancel()
	}
	done := b.done
	b.life.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("billing: evaluation still running: %w", ctx.Err())
	}
}

// run evaluates every EnforceInterval, or, when a pass takes longer than a
// tenth of that (a registry of a million orgs), ten times as long as the
// pass took: enforcement never takes more than about a tenth of a core.
func (b *Billing) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		b.Evaluate(ctx)
		t.Reset(max(b.cfg.EnforceInterval, 10*time.Since(start)))
	}
}

// warnPercent is the share of a quota that fires quota.warning;
// quota.exceeded fires at 100 %.
const warnPercent = 80

// Evaluate is one pass: read every org's egress of the current period (the
// flushed counters of Options.Usage: this node's in bbolt, all nodes' in
// Redis), recompute each decision, expire past-due orgs whose grace is
// over, and fire the hooks that are due. Usage that cannot be
// read keeps the previous decisions (fail open for serving).
func (b *Billing) Evaluate(ctx context.Context) {
	now := b.now()
	period := meter.Period(now)
	usage, err := b.readUsage(ctx, period)
	if err != nil {
		b.evalErrs.Inc()
		b.log.Warn("usage not readable; enforcement keeps its last decisions", slog.Any("err", err))
	}
	snap := b.opts.Sites.Snapshot()
	var expire []string
	var marks []mark

	storage, measured := b.readStorage(snap) // a pass over every site: not under b.mu, which registry writes take
	b.mu.Lock()
	if usage != nil {
		b.usage = usage
	}
	if measured {
		b.storage = storage
	}
	counts := make(map[access.Decision]float64)
	next := make(map[string]access.Decision, len(b.prev)) // orgs not allowed only: allow is the zero value
	var p pace.Pacer
	for id, o := range snap.Orgs.All() {
		if p.Check() {
			// Let registry writes (decide) and new gates (Gate) in between,
			// and give the core back (package pace): a pass over a million
			// orgs would hold them up for its length. Never with b.mu
			// held: a write would wait for the pass to be scheduled again.
			b.mu.Unlock()
			p.Pause()
			b.mu.Lock()
		}
		plan := snap.Plans.Get(o.Plan)
		var d access.Decision
		if g, ok := b.gates.Load(id); ok {
			d = b.decideLocked(snap, o, g.(*access.Gate))
		} else {
			d, _ = b.decision(o, plan, now)
		}
		marks = append(marks, b.marksFor(snap, o, plan)...)
		if d != access.Allow {
			next[id] = d
		}
		counts[d]++
		b.quotaHooks(ctx, o, plan, period, now)
		b.decisionHooks(ctx, id, b.prev[id], d, period, now)
		if o.State == sites.StatePastDue && !o.GraceEndsAt.IsZero() {
			switch {
			case !now.Before(o.GraceEndsAt.Time()):
				expire = append(expire, id)
			case !now.Before(o.GraceEndsAt.Add(-b.cfg.GraceEndingNotice)):
				b.emitOnce(ctx, HookEvent{ID: fmt.Sprintf("grace.ending:%s:%d", id, o.GraceEndsAt.Time().Unix()), Type: "grace.ending",
					Org: id, At: now, Data: map[string]any{"grace_ends_at": o.GraceEndsAt}})
			}
		}
	}
	b.prev = next
	for _, d := range access.Decisions() {
		b.decisions.WithLabelValues(d.String()).Set(counts[d])
	}
	b.mu.Unlock()

	for _, m := range marks {
		b.applyMark(ctx, m, now)
	}
	b.drawCredits(ctx, snap, now) // prepaid orgs: completed hours drawn from credit (credit.go)
	for _, id := range expire {
		_, err := b.Apply(ctx, id, Change{State: sites.StateExpired, Cause: "grace period over", Actor: ActorBilling})
		if err != nil {
			b.log.Error("past-due org not expired", slog.String("org", id), slog.Any("err", err))
		}
	}
	b.due(ctx, snap, now) // pending plans due, trial.ending, trials over (ladder.go, trial.go)
}

// readUsage returns the egress of period of every org that has some. An
// org with none is left out: every reader of b.usage (decision,
// quotaHooks) reads a missing org as 0, and at a million orgs, most of them
// listed for their storage alone, the map of a pass (made every second, or
// ten times as long as a pass takes) is garbage once the next pass
// replaces it. It is made at the size of the last pass's, so it does not
// grow in steps that leave their smaller maps behind.
func (b *Billing) readUsage(ctx context.Context, period string) (map[string]int64, error) {
	if b.opts.Usage == nil {
		return nil, nil
	}
	b.mu.Lock()
	hint := len(b.usage)
	b.mu.Unlock()
	out := make(map[string]int64, hint)
	after := ""
	for {
		page, next, err := b.opts.Usage.PeriodTotals(ctx, period, after, 10_000)
		if err != nil {
			return nil, err
		}
		for _, t := range page {
			if t.EgressBytes != 0 {
				out[t.Org] = t.EgressBytes
			}
		}
		if next == "" {
			return out, nil
		}
		after = next
	}
}

// quotaHooks fires quota.warning at 80 % and quota.exceeded at 100 % of the
// egress and storage quotas, once per period each on this node (emitOnce).
func (b *Billing) quotaHooks(ctx context.Context, o *sites.Org, p *sites.Plan, period string, now time.Time) {
	if p == nil || b.opts.Hooks == nil {
		return
	}
	check := func(quota string, used, limit int64) {
		if limit <= 0 {
			return
		}
		data := map[string]any{"quota": quota, "used": used, "limit": limit, "period": period}
		if used*100 >= limit*warnPercent {
			b.emitOnce(ctx, HookEvent{ID: fmt.Sprintf("quota.warning:%s:%s:%s", o.ID, period, quota), Type: "quota.warning", Org: o.ID, At: now, Data: data})
		}
		if used >= limit {
			b.emitOnce(ctx, HookEvent{ID: fmt.Sprintf("quota.exceeded:%s:%s:%s", o.ID, period, quota), Type: "quota.exceeded", Org: o.ID, At: now, Data: data})
		}
	}
	check("egress", b.usage[o.ID], p.EgressBytes)
	if b.storage != nil {
		check("storage", b.storage[o.ID], p.StorageBytes)
	}
}

// decisionHooks fires org.throttled and org.blocked (quota) once per period
// on this node (emitOnce), and org.restored when a quota throttle or block
// lifts.
func (b *Billing) decisionHooks(ctx context.Context, org string, prev, d access.Decision, period string, now time.Time) {
	if prev == d {
		return
	}
	data := map[string]any{"from": prev.String(), "to": d.String(), "period": period}
	switch d {
	case access.Throttle:
		b.emitOnce(ctx, HookEvent{ID: fmt.Sprintf("org.throttled:%s:%s", org, period), Type: "org.throttled", Org: org, At: now, Data: data})
	case access.BlockQuota:
		b.emitOnce(ctx, HookEvent{ID: fmt.Sprintf("org.blocked:%s:%s", org, period), Type: "org.blocked", Org: org, At: now, Data: data})
	case access.BlockStorage:
		data["quota"] = "storage"
		b.emit(ctx, HookEvent{ID: fmt.Sprintf("org.blocked:%s:storage:%d", org, now.UnixNano()), Type: "org.blocked", Org: org, At: now, Data: data})
	case access.Allow:
		if prev == access.Throttle || prev == access.BlockQuota || prev == access.BlockStorage {
			b.emit(ctx, HookEvent{ID: fmt.Sprintf("org.restored:%s:%d", org, now.UnixNano()), Type: "org.restored", Org: org, At: now, Data: data})
		}
	}
}

// What package billing/stripe reads and changes (its Accounts interface).

// OrgByCustomer finds the org linked to a Stripe customer.
func (b *Billing) OrgByCustomer(customer string) (string, bool) {
	for id, o := range b.opts.Sites.Snapshot().Orgs.All() {
		if o.StripeCustomer == customer {
			return id, true
		}
	}
	return "", false
}

// OrgExists reports whether the org exists.
func (b *Billing) OrgExists(org string) bool { return b.opts.Sites.Snapshot().Orgs.Get(org) != nil }

// PlanExists reports whether the plan exists.
func (b *Billing) PlanExists(plan string) bool { return b.opts.Sites.Snapshot().Plans.Get(plan) != nil }

// DefaultPlan is [billing] default_plan.
func (b *Billing) DefaultPlan() string { return b.cfg.DefaultPlan }

// Quota returns the org's egress quota and Stripe customer.
func (b *Billing) Quota(org string) (int64, string) {
	s := b.opts.Sites.Snapshot()
	o := s.Orgs.Get(org)
	if o == nil {
		return 0, ""
	}
	if p := s.Plans.Get(o.Plan); p != nil {
		return p.EgressBytes, o.StripeCustomer
	}
	return 0, o.StripeCustomer
}

// PlanOf returns the org's plan and Stripe customer (for payment links).
func (b *Billing) PlanOf(org string) (plan, customer string, ok bool) {
	o := b.opts.Sites.Snapshot().Orgs.Get(org)
	if o == nil {
		return "", "", false
	}
	return o.Plan, o.StripeCustomer, true
}

// Rank returns the plan's rank on the ladder.
func (b *Billing) Rank(plan string) (int, bool) {
	p := b.opts.Sites.Snapshot().Plans.Get(plan)
	if p == nil {
		return 0, false
	}
	return p.Rank, true
}

// Orgs lists the org ids.
func (b *Billing) Orgs() []string {
	s := b.opts.Sites.Snapshot()
	out := make([]string, 0, s.Orgs.Len())
	for id := range s.Orgs.All() {
		out = append(out, id)
	}
	return out
}
