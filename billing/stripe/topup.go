package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/sites"
)

// Prepaid credit top-ups: TopUp opens a Stripe Checkout session in payment
// mode for an amount of [billing] currency, marked with the metadata
// tollgate_credit=top_up; when Stripe reports it paid
// (checkout.session.completed with payment_status "paid", or
// checkout.session.async_payment_succeeded for delayed methods), the
// webhook appends a top_up entry to the org's ledger with source
// "checkout:SESSION_ID". The source makes the credit exactly once whatever
// the redeliveries: a second event of the same session, or the same event
// on another node, answers "duplicate". Sessions in payment mode without
// that metadata are handled as any checkout (they link the customer).

// Credits is the prepaid credit ledger top-ups go to. *billing.Billing
// implements it.
type Credits interface {
	// Credit appends an entry (see billing.Billing.Credit); appended is
	// false when its source is in the ledger already.
	Credit(ctx context.Context, e credit.Entry) (stored credit.Entry, appended bool, balance int64, err error)
	// Currency is the ledger's currency.
	Currency() string
}

var _ Credits = (*billing.Billing)(nil)

// metaCredit marks a Checkout session that buys prepaid credit.
const metaCredit = "tollgate_credit"

// topUpSession is what a top-up reads of a checkout session.
type topUpSession struct {
	ID                string            `json:"id"`
	Mode              string            `json:"mode"`
	ClientReferenceID string            `json:"client_reference_id"`
	PaymentStatus     string            `json:"payment_status"`
	AmountTotal       int64             `json:"amount_total"`
	Currency          string            `json:"currency"`
	Metadata          map[string]string `json:"metadata"`
}

// CanTopUp reports whether TopUp is configured: a secret key, the
// checkout return URLs and a credit ledger. It does no I/O.
func (s *Stripe) CanTopUp() bool {
	return s.links != nil && s.credits != nil && s.cfg.CheckoutSuccessURL != "" && s.cfg.CheckoutCancelURL != ""
}

// TopUp returns the URL of a Stripe Checkout session in which org pays
// amount (minor units of the ledger's currency) for prepaid credit. An
// amount out of 1…credit.MaxAmount is sites.ErrInvalid, and so is one
// Stripe refuses (with Stripe's reason).
func (s *Stripe) TopUp(ctx context.Context, org string, amount int64) (string, error) {
	if !s.CanTopUp() {
		return "", fmt.Errorf("%w: [billing.stripe] secret_key, checkout_success_url and checkout_cancel_url", ErrNotConfigured)
	}
	_, customer, ok := s.links.plans.PlanOf(org)
	if !ok {
		return "", fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	if amount <= 0 || amount > credit.MaxAmount {
		return "", fmt.Errorf("%w: amount: %d must be between 1 and %d (minor units of %s)", sites.ErrInvalid, amount,
			int64(credit.MaxAmount), strings.ToUpper(s.credits.Currency()))
	}
	params := &stripego.CheckoutSessionParams{
		Mode: stripego.String(string(stripego.CheckoutSessionModePayment)),
		LineItems: []*stripego.CheckoutSessionLineItemParams{{Quantity: stripego.Int64(1),
			PriceData: &stripego.CheckoutSessionLineItemPriceDataParams{Currency: stripego.String(s.credits.Currency()),
				UnitAmount:  stripego.Int64(amount),
				ProductData: &stripego.CheckoutSessionLineItemPriceDataProductDataParams{Name: stripego.String("Prepaid credit")}}}},
	}
	params.AddMetadata(metaCredit, string(credit.TopUp))
	return s.newCheckout(ctx, org, customer, params)
}

// topUp handles ev when it is a top-up's session (ok true): it credits
// the ledger and records the event id as process does.
func (s *Stripe) topUp(ctx context.Context, log *slog.Logger, ev *stripego.Event) (outcome string, ok bool, werr *webhookError) {
	if ev.Type != "checkout.session.completed" && ev.Type != "checkout.session.async_payment_succeeded" {
		return "", false, nil
	}
	var sess topUpSession
	if json.Unmarshal(ev.Data.Raw, &sess) != nil || sess.Mode != "payment" || sess.Metadata[metaCredit] == "" {
		return "", false, nil
	}
	org := sess.ClientReferenceID
	outcome, werr = s.creditSession(ctx, log, ev, &sess)
	if werr != nil {
		return "", true, werr
	}
	rec, _ := json.Marshal(stripeEventRecord{At: s.now().UTC(), Type: string(ev.Type), Org: org, Outcome: outcome})
	if err := s.record(ctx, ev.ID, rec); err != nil {
		log.Error("stripe webhook: top-up credited but its event id not recorded", slog.Any("err", err))
		return "", true, &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	}
	return outcome, true, nil
}

// creditSession appends the session's top-up to the ledger.
func (s *Stripe) creditSession(ctx context.Context, log *slog.Logger, ev *stripego.Event, sess *topUpSession) (string, *webhookError) {
	org := sess.ClientReferenceID
	switch {
	case s.credits == nil:
		log.Error("stripe webhook: a top-up arrived but this node has no credit ledger; Stripe will retry")
		return "", &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	case org == "" || !s.acc.OrgExists(org):
		return "", unprocessable(outcomeUnknownOrg, "checkout session %s: client_reference_id %q is not an org", sess.ID, org)
	case sess.PaymentStatus != "paid" || sess.AmountTotal <= 0:
		log.Info("stripe webhook: top-up not paid yet", slog.String("org", org), slog.String("payment_status", sess.PaymentStatus))
		return outcomeIgnored, nil
	case sess.Currency != s.credits.Currency():
		return "", unprocessable(outcomeInvalid, "checkout session %s: currency %q is not the ledger's %q", sess.ID, sess.Currency, s.credits.Currency())
	}
	e := credit.Entry{Org: org, Amount: sess.AmountTotal, Kind: credit.TopUp, Source: "checkout:" + sess.ID,
		Actor: billing.ActorStripe, At: time.Unix(ev.Created, 0).UTC(), Note: "Stripe Checkout " + sess.ID + ", event " + ev.ID}
	_, appended, balance, err := s.credits.Credit(ctx, e)
	switch {
	case errors.Is(err, sites.ErrNotFound):
		return "", unprocessable(outcomeUnknownOrg, "org %q does not exist", org)
	case errors.Is(err, credit.ErrInvalid):
		return "", unprocessable(outcomeInvalid, "checkout session %s: %v", sess.ID, err)
	case err != nil:
		log.Error("stripe webhook: top-up not credited", slog.String("org", org), slog.Any("err", err))
		return "", &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	case !appended:
		return outcomeDuplicate, nil
	}
	log.Info("stripe webhook: credit topped up", slog.String("org", org), slog.Int64("amount", e.Amount), slog.Int64("balance", balance))
	return outcomeApplied, nil
}
