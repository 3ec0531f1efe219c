package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// Trials. A plan may declare trial_days. An org gets a trial, state
// trialing and TrialEndsAt = now + trial_days, when
//
//   - it is created through CreateOrg (the admin API) on such a plan with no
//     state asked (or "trialing") and no Stripe customer, or
//   - the operator moves it to such a plan without asking for a state in
//     the same change, while it is active or trialing and linked to no
//     Stripe customer (a new trial replaces a running one).
//
// An explicit state wins: an org created or moved with state "active" pays
// outside Stripe and gets no trial. Orgs linked to a Stripe customer get
// their trials from Stripe (a subscription in status trialing), which ends
// them with its own events. A trial runs until TrialEndsAt whatever plan
// the org is moved to meanwhile.
//
// [billing] trial_ending_notice before the end, hook trial.ending; at the
// end, in the periodic pass, hook trial.ended, each once per trial (ids
// trial.ending:ORG:UNIX and trial.ended:ORG:UNIX, UNIX the end's second).
// At the end an org in state active (a subscription paid meanwhile) keeps
// its plan; any other org moves to [billing] default_plan, state active
// (a suspended one stays suspended), actor billing, cause "trial ended".
// Either way TrialEndsAt is cleared.

// startTrial starts a trial of plan p for o if p has one and o has no
// paying subscription (see above), recording the events.
func startTrial(o *sites.Org, p *sites.Plan, now time.Time, record recordFunc, cause string) {
	if p == nil || p.TrialDays <= 0 || o.StripeCustomer != "" ||
		(o.State != sites.StateActive && o.State != sites.StateTrialing && o.State != "") {
		return
	}
	cause = fmt.Sprintf("%s: trial of %d days on plan %s", cause, p.TrialDays, p.Name)
	if o.State != sites.StateTrialing {
		record("state", o.State, sites.StateTrialing, cause)
		o.State, o.GraceEndsAt = sites.StateTrialing, sites.Instant{}
	}
	ends := now.Add(time.Duration(p.TrialDays) * 24 * time.Hour).UTC()
	record("trial_ends_at", stamp(o.TrialEndsAt.Time()), stamp(ends), cause)
	o.TrialEndsAt = sites.At(ends)
}

// stamp is an event's text for a time: RFC 3339, "" for none.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// CreateOrg creates an org as the operator asks, with a trial when its plan
// has one (see above), and records its plan, its state and the trial as
// events (actor operator, cause "org created"). The events are written
// after the org: if that fails the org exists and the error is logged.
func (b *Billing) CreateOrg(ctx context.Context, o sites.Org) (sites.Org, error) {
	now := b.now()
	const cause = "org created"
	trialCause := ""
	if o.State == "" || o.State == sites.StateTrialing {
		startTrial(&o, b.opts.Sites.Snapshot().Plans.Get(o.Plan), now, func(field, _, _, c string) {
			trialCause = c
		}, cause)
	}
	var events []Event
	created, err := b.opts.Sites.CreateOrgWith(ctx, o, func(created sites.Org) []store.Op {
		events = events[:0]
		record := func(field, to, cause string) {
			events = append(events, Event{At: now, Org: o.ID, Actor: ActorOperator, Field: field, To: to, Cause: cause})
		}
		record("plan", created.Plan, cause)
		record("state", created.State, cause)
		if !created.TrialEndsAt.IsZero() {
			record("trial_ends_at", stamp(created.TrialEndsAt.Time()), trialCause)
		}
		return eventOps(o.ID, now, events)
	})
	return created, err
}

// endTrial ends the org's trial if it still ends at ends and is over, then
// sends trial.ended.
func (b *Billing) endTrial(ctx context.Context, id string, ends, now time.Time) error {
	outcome := ""
	o, changed, err := b.changeAsBilling(ctx, id, now,
		func(o *sites.Org, snap *sites.Snapshot, record recordFunc) error {
			if o.TrialEndsAt != sites.At(ends) || now.Before(ends) {
				return errUnchanged
			}
			const cause = "trial ended"
			outcome = "paid"
			if o.State != sites.StateActive {
				outcome = "default_plan"
				if err := b.trialOver(o, snap, record); err != nil {
					return err
				}
			}
			record("trial_ends_at", stamp(o.TrialEndsAt.Time()), "", cause+" ("+outcome+")")
			o.TrialEndsAt = sites.Instant{}
			return nil
		})
	if err != nil || !changed {
		return err
	}
	b.mu.Lock() // b.fired
	defer b.mu.Unlock()
	b.emitOnce(ctx, HookEvent{ID: fmt.Sprintf("trial.ended:%s:%d", id, ends.Unix()), Type: "trial.ended", Org: id, At: now,
		Data: map[string]any{"trial_ends_at": ends, "outcome": outcome, "plan": o.Plan, "state": o.State}})
	return nil
}

// trialOver moves an org whose trial ended unpaid to the default plan,
// state active (a suspension stays), cancelling a pending plan.
func (b *Billing) trialOver(o *sites.Org, snap *sites.Snapshot, record recordFunc) error {
	const cause = "trial ended"
	if snap.Plans.Get(b.cfg.DefaultPlan) == nil {
		return fmt.Errorf("%w: billing.default_plan %q does not exist", sites.ErrInvalid, b.cfg.DefaultPlan)
	}
	if o.PendingPlan != "" {
		cancelPending(o, record, cause)
	}
	if o.Plan != b.cfg.DefaultPlan {
		record("plan", o.Plan, b.cfg.DefaultPlan, cause)
		o.Plan = b.cfg.DefaultPlan
	}
	if o.State != sites.StateSuspended {
		record("state", o.State, sites.StateActive, cause)
		o.State, o.GraceEndsAt = sites.StateActive, sites.Instant{}
	}
	return nil
}
