package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// The account lifecycle, one state machine. Every change of state, plan or
// Stripe customer is recorded as an Event (time, cause, actor) in the same
// transaction as the change, and listed by GET /v1/orgs/{id}/events:
//
//	trialing ──paid──▶ active ◀──paid── past_due ──grace over──▶ expired
//	    │                 │ ▲              ▲  │                      │
//	    └──payment failed─┼─┼──────────────┘  └──────paid────────────┤
//	                      │ └──────────────────────────paid──────────┘
//	     any ──operator──▶ suspended ──operator──▶ active
//
// A cancelled subscription moves the org to the default plan, state active.
// Stripe never lifts a suspension: while suspended, Stripe events change the
// plan and customer but not the state (the event says so).
//
// Plan changes follow the plan ladder (ladder.go): up at once, down at the
// end of the paid period for the tenant, down only with force for the
// operator. An org created on, or moved by the operator to, a plan with
// trial_days starts a trial (trial.go); when it ends the org keeps its plan
// if it is active (paid), else it moves to the default plan, state active.

// Actors of events.
const (
	ActorOperator = "operator" // the admin API
	ActorStripe   = "stripe"   // a Stripe webhook event
	ActorBilling  = "billing"  // the quota loop and the clock (grace over)
)

// Event is one recorded change of an org's account.
type Event struct {
	At    time.Time `json:"at"`
	Org   string    `json:"org"`
	Field string    `json:"field"` // "state", "plan", "pending_plan", "trial_ends_at" or "stripe_customer"
	From  string    `json:"from"`
	To    string    `json:"to"`
	Cause string    `json:"cause"`
	Actor string    `json:"actor"`
	Ref   string    `json:"ref,omitempty"` // the Stripe event id, …
}

// Change is what a caller asks of an org's account. Empty fields are left
// as they are.
type Change struct {
	State          string
	Plan           string
	StripeCustomer string
	Cause, Actor   string
	Ref            string
	// StripeEventAt orders Stripe events: a change older than the newest one
	// applied returns ErrStale and changes nothing. Zero for other actors.
	StripeEventAt time.Time
	// Tenant marks a plan change the tenant asked for (a Stripe subscription
	// created or changed through Checkout or the customer portal): a move
	// down the plan ladder waits for PeriodEnd (ladder.go).
	Tenant bool
	// PeriodEnd is the end of the period the tenant paid for (the
	// subscription's current_period_end); zero when unknown, and then a
	// tenant downgrade applies at once.
	PeriodEnd time.Time
	// Force lets the operator move an org down the plan ladder; without it
	// such a change returns ErrDowngrade and changes nothing.
	Force bool
	// TrialEndsAt moves the end of a trialing org's trial (the operator
	// extends or shortens it; a time past ends it at the next pass). Zero:
	// unchanged. An org that is not trialing returns ErrTransition.
	TrialEndsAt time.Time
}

// Errors of Apply.
var (
	// ErrTransition: the state machine does not allow the change. It
	// matches sites.ErrConflict (409 at the admin API).
	ErrTransition = fmt.Errorf("state change not allowed: %w", sites.ErrConflict)
	// ErrStale: a Stripe event older than what the org already reflects.
	ErrStale = fmt.Errorf("stale event: %w", sites.ErrConflict)
)

// transitions lists, per state, the states an org may move to.
var transitions = map[string][]string{
	sites.StateTrialing:  {sites.StateActive, sites.StatePastDue, sites.StateSuspended},
	sites.StateActive:    {sites.StatePastDue, sites.StateSuspended},
	sites.StatePastDue:   {sites.StateActive, sites.StateExpired, sites.StateSuspended},
	sites.StateExpired:   {sites.StateActive, sites.StateSuspended},
	sites.StateSuspended: {sites.StateActive},
}

// Allowed reports whether the state machine lets an org move from state
// from to state to. The operator may force any change; Stripe and the
// billing loop may not.
func Allowed(from, to string) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Registry is what the lifecycle needs of the site registry.
// *sites.Registry implements it.
type Registry interface {
	ModifyOrg(ctx context.Context, id string, fn func(o *sites.Org, s *sites.Snapshot) ([]store.Op, error)) (sites.Org, error)
}

// bucketEvents holds Event records, keyed org + "/" + zero-padded unix nanos
// + a sequence (keys sort by time within an org).
const bucketEvents = "org_events"

// apply changes org id as c asks, recording an Event per changed field. It
// returns the events it recorded (none when nothing changed).
func apply(ctx context.Context, reg Registry, now time.Time, id string, c Change) (sites.Org, []Event, error) {
	return modify(ctx, reg, Event{At: now, Org: id, Actor: c.Actor, Ref: c.Ref}, func(o *sites.Org, snap *sites.Snapshot, record recordFunc) error {
		if !c.StripeEventAt.IsZero() {
			if c.StripeEventAt.Before(o.StripeEventAt.Time()) {
				return fmt.Errorf("%w: event of %s, org reflects %s", ErrStale, c.StripeEventAt.Format(time.RFC3339), o.StripeEventAt.Time().Format(time.RFC3339))
			}
			o.StripeEventAt = sites.At(c.StripeEventAt)
		}
		if c.StripeCustomer != "" && c.StripeCustomer != o.StripeCustomer {
			record("stripe_customer", o.StripeCustomer, c.StripeCustomer, c.Cause)
			o.StripeCustomer = c.StripeCustomer
		}
		if c.Plan != "" {
			plan := o.Plan
			if err := changePlan(o, snap, c, now, record); err != nil {
				return err
			}
			if o.Plan != plan && c.Actor == ActorOperator && c.State == "" {
				startTrial(o, snap.Plans.Get(o.Plan), now, record, c.Cause)
			}
		}
		if c.State != "" && c.State != o.State {
			switch {
			case o.State == sites.StateSuspended && c.Actor != ActorOperator:
				// Stripe never lifts a suspension; its other changes apply.
				record("state", o.State, o.State, c.Cause+" (ignored: suspended by the operator)")
			case !Allowed(o.State, c.State) && c.Actor != ActorOperator:
				return fmt.Errorf("%w: %s → %s", ErrTransition, o.State, c.State)
			default:
				record("state", o.State, c.State, c.Cause)
				if c.State == sites.StatePastDue {
					grace := time.Duration(0)
					if p := snap.Plans.Get(o.Plan); p != nil {
						grace = time.Duration(p.GracePeriod)
					}
					o.GraceEndsAt = sites.At(now.Add(grace))
				} else {
					o.GraceEndsAt = sites.Instant{}
				}
				o.State = c.State
			}
		}
		if !c.TrialEndsAt.IsZero() {
			if o.State != sites.StateTrialing {
				return fmt.Errorf("%w: trial_ends_at: the org is %s, not trialing", ErrTransition, o.State)
			}
			record("trial_ends_at", stamp(o.TrialEndsAt.Time()), stamp(c.TrialEndsAt), c.Cause)
			o.TrialEndsAt = sites.At(c.TrialEndsAt)
		}
		return nil
	})
}

// modify changes org id with fn, which edits a copy and records the fields
// it changes; each becomes an Event like tmpl (time, org, actor, ref),
// written in the same transaction as the org. It returns the events (none
// when nothing changed).
func modify(ctx context.Context, reg Registry, tmpl Event,
	fn func(o *sites.Org, snap *sites.Snapshot, record recordFunc) error) (sites.Org, []Event, error) {
	var events []Event
	org, err := reg.ModifyOrg(ctx, tmpl.Org, func(o *sites.Org, snap *sites.Snapshot) ([]store.Op, error) {
		events = events[:0]
		record := func(field, from, to, cause string) {
			e := tmpl
			e.Field, e.From, e.To, e.Cause = field, from, to, cause
			events = append(events, e)
		}
		if err := fn(o, snap, record); err != nil {
			return nil, err
		}
		return eventOps(tmpl.Org, tmpl.At, events), nil
	})
	if err != nil {
		return sites.Org{}, nil, err
	}
	return org, events, nil
}

// eventOps are the writes of an org's account events of one instant.
func eventOps(org string, at time.Time, events []Event) []store.Op {
	ops := make([]store.Op, 0, len(events))
	for _, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			panic(err) // Event is a plain struct: Marshal cannot fail
		}
		ops = append(ops, store.Put(bucketEvents, eventKey(org, at), b))
	}
	return ops
}

// eventSeq orders events recorded at the same instant (a coarse or fake
// clock) within this process.
var eventSeq atomic.Uint64

func eventKey(org string, at time.Time) string {
	return fmt.Sprintf("%s/%020d-%012d", org, at.UnixNano(), eventSeq.Add(1))
}
