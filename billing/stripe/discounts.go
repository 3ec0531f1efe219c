package stripe

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/tollgate-edge/tollgate/billing"
)

// Emitter queues lifecycle hooks. *hooks.Hooks implements it.
type Emitter interface {
	// Emit queues e for every receiver that wants its type; receivers
	// deduplicate on e.ID.
	Emit(ctx context.Context, e billing.HookEvent) error
}

// eventDiscountCreated is the Stripe event of a discount applied to a
// customer or a subscription: a coupon cashed (a promotion code typed in
// Checkout or the portal, or a coupon the operator applied).
const eventDiscountCreated = "customer.discount.created"

// discountObject holds the fields of a discount that are read.
type discountObject struct {
	ID            string          `json:"id"` // di_…
	Customer      stripeID        `json:"customer"`
	Subscription  stripeID        `json:"subscription"`
	PromotionCode stripeID        `json:"promotion_code"`
	Coupon        *discountCoupon `json:"coupon"`
}

// discountCoupon is the coupon of a discount (always expanded).
type discountCoupon struct {
	ID               string            `json:"id"`
	PercentOff       float64           `json:"percent_off"`
	AmountOff        int64             `json:"amount_off"`
	Currency         string            `json:"currency"`
	Duration         string            `json:"duration"`
	DurationInMonths int64             `json:"duration_in_months"`
	Metadata         map[string]string `json:"metadata"`
}

// couponCashed turns a customer.discount.created event into the hook
// coupon.cashed for the customer's org. The hook's id is the discount's
// ("coupon.cashed:di_…"), so a delivery repeated after a crash, or after
// the event id was forgotten, queues the same hook, which receivers
// deduplicate. A discount is a fact, not a state: an event older than
// what the org reflects still cashes, but one older than the retention of
// event ids is "stale" (it may have been cashed and forgotten). Without
// hooks configured the event is "ignored".
func (s *Stripe) couponCashed(ctx context.Context, log *slog.Logger, ev *stripego.Event) (org, outcome string, werr *webhookError) {
	var d discountObject
	if err := json.Unmarshal(ev.Data.Raw, &d); err != nil {
		return "", "", &webhookError{http.StatusBadRequest, outcomeBadRequest, "data.object: " + err.Error()}
	}
	at := time.Unix(ev.Created, 0).UTC()
	if at.Before(s.now().Add(-stripeEventRetention)) {
		log.Info("stripe webhook: discount older than the event id retention, not cashed again", slog.String("discount", d.ID))
		return "", outcomeStale, nil
	}
	org, ok := s.orgByCustomer(string(d.Customer))
	switch {
	case d.Coupon == nil || d.ID == "":
		log.Info("stripe webhook: event ignored", slog.String("reason", "discount without id or coupon"))
		return "", outcomeIgnored, nil
	case !ok:
		return "", "", unprocessable(outcomeUnknownOrg, "discount %s: customer %q is linked to no org", d.ID, string(d.Customer))
	case s.hooks == nil:
		log.Debug("stripe webhook: event ignored", slog.String("org", org), slog.String("reason", "no hooks configured"))
		return org, outcomeIgnored, nil
	}
	code, err := s.codeOf(ctx, &d)
	if err != nil {
		log.Warn("stripe webhook: promotion code not readable; Stripe will retry", slog.Any("err", err))
		return org, "", &webhookError{http.StatusInternalServerError, outcomeError, "the promotion code could not be read from Stripe; retry"}
	}
	c := d.Coupon
	data := map[string]any{"source": "stripe", "code": code, "coupon": c.ID, "discount": d.ID, "duration": c.Duration, "stripe_event": ev.ID}
	if c.PercentOff != 0 {
		data["percent_off"] = c.PercentOff
	} else {
		data["amount_off"], data["currency"] = c.AmountOff, c.Currency
	}
	if c.DurationInMonths > 0 {
		data["duration_in_months"] = c.DurationInMonths
	}
	if d.PromotionCode != "" {
		data["promotion_code"] = string(d.PromotionCode)
	}
	if d.Subscription != "" {
		data["subscription"] = string(d.Subscription)
	}
	e := billing.HookEvent{ID: "coupon.cashed:" + d.ID, Type: "coupon.cashed", Org: org, At: at, Data: data}
	if err := s.hooks.Emit(ctx, e); err != nil {
		log.Error("stripe webhook: coupon.cashed not queued; Stripe will retry", slog.String("org", org), slog.Any("err", err))
		return org, "", &webhookError{http.StatusInternalServerError, outcomeError, "internal error; the server log has the details"}
	}
	log.Info("stripe webhook: coupon cashed", slog.String("org", org), slog.String("code", code), slog.String("discount", d.ID))
	return org, outcomeApplied, nil
}

// codeOf is the code a discount was cashed with: the coupon's metadata
// tollgate_code (set by CreateCoupon), else its promotion code's, read
// from Stripe (one call, under the webhook's lock: only for coupons made
// outside tollgate); "" for a coupon applied without a code.
func (s *Stripe) codeOf(ctx context.Context, d *discountObject) (string, error) {
	if code := d.Coupon.Metadata[metaCode]; code != "" {
		return code, nil
	}
	if d.PromotionCode == "" || s.api == nil {
		return "", nil
	}
	p := &stripego.PromotionCodeParams{}
	p.Context = ctx
	pc, err := s.api.coupons.codes.Get(string(d.PromotionCode), p)
	if err != nil {
		return "", fmt.Errorf("promotion code %s: %w", d.PromotionCode, err)
	}
	return pc.Code, nil
}
