package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tollgate-edge/tollgate/internal/pace"
	"github.com/tollgate-edge/tollgate/sites"
)

// The plan ladder. Plans are ordered by sites.Plan.Rank. A move to a plan
// of a higher rank is an upgrade and applies at once, whoever asks. A move
// to a plan of an equal or lower rank is a downgrade:
//
//   - asked by the tenant (Change.Tenant: a Stripe subscription created or
//     changed through Checkout or the customer portal), it waits for the end
//     of the period paid for (Change.PeriodEnd): the org keeps its plan and
//     gets PendingPlan and PendingPlanAt, and the periodic pass (Evaluate)
//     applies the pending plan when it is due. Without a period end, or with
//     one already past, it applies at once and the event's cause says why;
//   - asked by the operator, it is refused with ErrDowngrade unless
//     Change.Force;
//   - anything else (a cancelled subscription, a trial over, a pending plan
//     due) applies at once.
//
// Any later change that names a plan cancels a pending plan (an upgrade, a
// forced move, the tenant's subscription back on the current plan), except
// another tenant downgrade, which replaces it (to the same plan it keeps the
// earlier time: a pending plan is never postponed). Every step is an event:
// field "plan" for the change itself, field "pending_plan" for a downgrade
// scheduled ("" → plan), applied or cancelled (plan → "").

// ErrDowngrade: the operator asked for a move down the ladder without
// force. It matches sites.ErrConflict (409 at the admin API, problem type
// urn:tollgate:problem:plan-downgrade).
var ErrDowngrade = fmt.Errorf("plan downgrade not allowed: %w", sites.ErrConflict)

// recordFunc records one changed field of an org as an Event.
type recordFunc func(field, from, to, cause string)

// errUnchanged ends a ModifyOrg that finds nothing left to do (another
// change came first): nothing is written.
var errUnchanged = errors.New("billing: nothing to change")

// changePlan applies c.Plan to o by the ladder's rules, recording the
// events. snap has the plans.
func changePlan(o *sites.Org, snap *sites.Snapshot, c Change, now time.Time, record recordFunc) error {
	to := snap.Plans.Get(c.Plan)
	if to == nil {
		return fmt.Errorf("%w: plan %q does not exist", sites.ErrInvalid, c.Plan)
	}
	if c.Plan == o.Plan {
		if o.PendingPlan != "" && (c.Tenant || c.Actor == ActorOperator) {
			cancelPending(o, record, fmt.Sprintf("%s: plan %s kept", c.Cause, o.Plan))
		}
		return nil
	}
	from := snap.Plans.Get(o.Plan)
	down := from != nil && to.Rank <= from.Rank
	cause := c.Cause
	switch {
	case down && c.Tenant && o.PendingPlan == c.Plan && !now.Before(o.PendingPlanAt.Time()):
		cause += ": pending downgrade due"
	case down && c.Tenant && c.PeriodEnd.After(now):
		at := c.PeriodEnd
		if o.PendingPlan == c.Plan && o.PendingPlanAt.Before(at) {
			at = o.PendingPlanAt.Time() // a later event never postpones it
		}
		if o.PendingPlan != c.Plan || o.PendingPlanAt != sites.At(at) {
			record("pending_plan", o.PendingPlan, c.Plan, fmt.Sprintf("%s: downgrade from %s at the end of the paid period, %s",
				c.Cause, o.Plan, at.UTC().Format(time.RFC3339)))
			o.PendingPlan, o.PendingPlanAt = c.Plan, sites.At(at)
		}
		return nil
	case down && c.Tenant && c.PeriodEnd.IsZero():
		cause += ": downgrade applied at once (the event has no period end)"
	case down && c.Tenant:
		cause += fmt.Sprintf(": downgrade applied at once (the paid period ended %s)", c.PeriodEnd.UTC().Format(time.RFC3339))
	case down && c.Actor == ActorOperator && !c.Force:
		return fmt.Errorf("%w: %s (rank %d) → %s (rank %d) is not a move up; force it to move the org down",
			ErrDowngrade, o.Plan, from.Rank, c.Plan, to.Rank)
	case down && c.Actor == ActorOperator:
		cause += " (forced downgrade)"
	}
	if o.PendingPlan != "" {
		cancelPending(o, record, fmt.Sprintf("%s: superseded by the move to %s", c.Cause, c.Plan))
	}
	record("plan", o.Plan, c.Plan, cause)
	o.Plan = c.Plan
	return nil
}

func cancelPending(o *sites.Org, record recordFunc, cause string) {
	record("pending_plan", o.PendingPlan, "", cause)
	o.PendingPlan, o.PendingPlanAt = "", sites.Instant{}
}

// due is the periodic part of the ladder and of trials, run by Evaluate
// outside b.mu: it applies the pending plans that are due, sends
// trial.ending, and ends the trials that are over (see trial.go). snap is
// the pass's snapshot; each change checks the org again when it writes.
func (b *Billing) due(ctx context.Context, snap *sites.Snapshot, now time.Time) {
	var pending, ended, ending []*sites.Org
	var p pace.Pacer // a million orgs: give the core back now and then
	for _, o := range snap.Orgs.All() {
		p.Step()
		if o.PendingPlan != "" && !now.Before(o.PendingPlanAt.Time()) {
			pending = append(pending, o)
		}
		switch {
		case o.TrialEndsAt.IsZero():
		case !now.Before(o.TrialEndsAt.Time()):
			ended = append(ended, o)
		case !now.Before(o.TrialEndsAt.Add(-b.cfg.TrialEndingNotice)):
			ending = append(ending, o)
		}
	}
	if len(ending) > 0 {
		b.mu.Lock() // b.fired
		for _, o := range ending {
			b.emitOnce(ctx, HookEvent{ID: fmt.Sprintf("trial.ending:%s:%d", o.ID, o.TrialEndsAt.Time().Unix()), Type: "trial.ending",
				Org: o.ID, At: now, Data: map[string]any{"plan": o.Plan, "trial_ends_at": o.TrialEndsAt}})
		}
		b.mu.Unlock()
	}
	for _, o := range pending {
		if err := b.applyPending(ctx, o.ID, o.PendingPlan, now); err != nil {
			b.log.Error("pending plan not applied", slog.String("org", o.ID), slog.String("plan", o.PendingPlan), slog.Any("err", err))
		}
	}
	for _, o := range ended {
		if err := b.endTrial(ctx, o.ID, o.TrialEndsAt.Time(), now); err != nil {
			b.log.Error("trial not ended", slog.String("org", o.ID), slog.Any("err", err))
		}
	}
}

// applyPending moves the org to its pending plan if that is still plan and
// due.
func (b *Billing) applyPending(ctx context.Context, id, plan string, now time.Time) error {
	_, _, err := b.changeAsBilling(ctx, id, now, func(o *sites.Org, snap *sites.Snapshot, record recordFunc) error {
		if o.PendingPlan != plan || now.Before(o.PendingPlanAt.Time()) {
			return errUnchanged
		}
		if snap.Plans.Get(plan) == nil {
			return fmt.Errorf("%w: pending plan %q does not exist", sites.ErrInvalid, plan)
		}
		at := o.PendingPlanAt.Time().Format(time.RFC3339)
		record("plan", o.Plan, plan, "tenant downgrade due: the paid period ended "+at)
		record("pending_plan", plan, "", "applied")
		o.Plan, o.PendingPlan, o.PendingPlanAt = plan, "", sites.Instant{}
		return nil
	})
	return err
}

// changeAsBilling changes org id with fn as billing's own change (modify,
// actor billing), then logs the plan changes among its events and emits
// their hooks (logged). A fn that returns errUnchanged writes nothing:
// changed is false and the error nil.
func (b *Billing) changeAsBilling(ctx context.Context, id string, now time.Time,
	fn func(o *sites.Org, snap *sites.Snapshot, record recordFunc) error) (o sites.Org, changed bool, err error) {
	before := b.opts.Sites.Snapshot().Orgs.Get(id)
	o, events, err := modify(ctx, b.opts.Sites, Event{At: now, Org: id, Actor: ActorBilling}, fn)
	if errors.Is(err, errUnchanged) {
		return o, false, nil
	}
	if err != nil {
		return o, false, err
	}
	b.logged(ctx, before, &o, events)
	return o, true, nil
}

// logged logs the plan changes among events and emits their hooks.
func (b *Billing) logged(ctx context.Context, before, after *sites.Org, events []Event) {
	for _, e := range events {
		if e.Field == "plan" || e.Field == "pending_plan" {
			b.log.Info("billing: "+e.Field+" changed", slog.String("org", e.Org), slog.String("from", e.From),
				slog.String("to", e.To), slog.String("actor", e.Actor), slog.String("cause", e.Cause))
		}
		b.hooksFor(ctx, before, after, e)
	}
}
