package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// stripeEventRetention is how long processed event ids are remembered:
// well beyond Stripe's 3 days of retries and manual resends of recent
// events. An older event delivered again is processed again; its
// StripeEventAt makes it stale if the org has seen anything newer.
const stripeEventRetention = 30 * 24 * time.Hour

// maxWebhookBody bounds a webhook request body (Stripe events are a few
// KiB; a subscription with many items stays far below).
const maxWebhookBody = MaxWebhookBody

// MaxWebhookBody is the largest Stripe webhook body accepted (1 MiB); the
// public listener refuses longer ones before reading them.
const MaxWebhookBody = 1 << 20

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
//	                                   the plan follows the ladder (billing/ladder.go):
//	                                   a higher rank at once, an equal or lower one at
//	                                   current_period_end (pending), or at once when the
//	                                   event has none or is the period's renewal
//	customer.subscription.deleted    default plan, state active
//	invoice.paid                     state active
//	invoice.payment_failed           state past_due
//	customer.discount.created        hook coupon.cashed (discounts.go), no change
//	checkout.session.completed,      a top-up (mode payment, metadata tollgate_credit):
//	checkout.session.async_payment_    amount_total credited to the org's prepaid
//	succeeded                          credit once per session (topup.go)
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
	writeJSON(w, http.StatusOK, "application/json", struct {
		Received bool   `json:"received"`
		Outcome  string `json:"outcome"`
	}{true, outcome})
}

// fail counts and answers a problem (RFC 7807), as the admin API does.
func (s *Stripe) fail(w http.ResponseWriter, e *webhookError) {
	s.webhooks.WithLabelValues(e.outcome).Inc()
	writeJSON(w, e.status, "application/problem+json", struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail,omitempty"`
	}{"about:blank", http.StatusText(e.status), e.status, e.detail})
}

// writeJSON answers status with v encoded as JSON, sent as contentType.
func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// process handles a verified event: duplicate check, mapping, Apply, record.
func (s *Stripe) process(ctx context.Context, ev *stripego.Event) (string, *webhookError) {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	log := s.log.With(slog.String("event", ev.ID), slog.String("type", string(ev.Type)))
	seen, err := s.seen(ctx, ev.ID)
	if err != nil {
		log.Error("stripe webhook: event ids not readable", slog.Any("err", err))
		return "", &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	}
	if seen {
		log.Debug("stripe webhook: duplicate delivery")
		return outcomeDuplicate, nil
	}

	if outcome, ok, werr := s.topUp(ctx, log, ev); ok { // prepaid credit (topup.go)
		return outcome, werr
	}

	handle := s.account
	if string(ev.Type) == eventDiscountCreated {
		handle = s.couponCashed // discounts.go
	}
	org, outcome, werr := handle(ctx, log, ev)
	if werr != nil {
		return "", werr
	}

	rec, _ := json.Marshal(stripeEventRecord{At: s.now().UTC(), Type: string(ev.Type), Org: org, Outcome: outcome})
	if err := s.record(ctx, ev.ID, rec); err != nil {
		// Stripe retries; applying the same change again is no change.
		log.Error("stripe webhook: event applied but its id not recorded", slog.Any("err", err))
		return "", &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	}
	return outcome, nil
}

// account maps an event to an account change and applies it.
func (s *Stripe) account(ctx context.Context, log *slog.Logger, ev *stripego.Event) (string, string, *webhookError) {
	org, c, skip, werr := s.change(ev)
	if werr != nil {
		log.Warn("stripe webhook: event not applicable yet; Stripe will retry", slog.String("org", org),
			slog.String("outcome", werr.outcome), slog.String("reason", werr.detail))
		return "", "", werr
	}
	if skip != "" {
		level := slog.LevelInfo
		if skip == skipUnhandled {
			level = slog.LevelDebug // the endpoint may be subscribed to more types than it needs
		}
		log.Log(ctx, level, "stripe webhook: event ignored", slog.String("org", org), slog.String("reason", skip))
		return org, outcomeIgnored, nil
	}
	outcome, werr := s.apply(ctx, log, org, c)
	return org, outcome, werr
}

// eventIDsNS is the namespace of webhook event ids in EventIDs.
const eventIDsNS = "stripe_event"

// seen reports whether the event id was processed (by any node, with
// EventIDs).
func (s *Stripe) seen(ctx context.Context, id string) (bool, error) {
	if s.ids != nil {
		return s.ids.Marked(ctx, eventIDsNS, id)
	}
	v, err := s.st.Get(ctx, bucketStripeEvents, id)
	return v != nil, err
}

// record remembers a processed event id for stripeEventRetention.
func (s *Stripe) record(ctx context.Context, id string, rec []byte) error {
	if s.ids != nil {
		return s.ids.Mark(ctx, eventIDsNS, id, rec, stripeEventRetention)
	}
	return s.st.Apply(ctx, store.Put(bucketStripeEvents, id, rec))
}

// apply applies c and maps Apply's errors to outcomes.
func (s *Stripe) apply(ctx context.Context, log *slog.Logger, org string, c billing.Change) (string, *webhookError) {
	_, err := s.acc.Apply(ctx, org, c)
	if errors.Is(err, billing.ErrTransition) && (c.Plan != "" || c.StripeCustomer != "") {
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
	case errors.Is(err, billing.ErrStale):
		log.Info("stripe webhook: stale event, no change", slog.String("org", org), slog.Any("reason", err))
		return outcomeStale, nil
	case errors.Is(err, billing.ErrTransition):
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

// pruneEvents forgets webhook event ids processed before the retention.
func (s *Stripe) pruneEvents(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-stripeEventRetention)
	var old []store.Op
	err := s.st.Scan(ctx, bucketStripeEvents, func(k, v []byte) error {
		var r stripeEventRecord
		if json.Unmarshal(v, &r) != nil || r.At.Before(cutoff) {
			old = append(old, store.Delete(bucketStripeEvents, string(k)))
		}
		return nil
	})
	if err != nil || len(old) == 0 {
		return err
	}
	return s.st.Apply(ctx, old...)
}
