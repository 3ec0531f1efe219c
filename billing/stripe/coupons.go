package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/coupon"
	"github.com/stripe/stripe-go/v76/promotioncode"
	"github.com/tollgate-edge/tollgate/sites"
)

// Coupons: the operator creates a Stripe coupon with one promotion code (the
// code a customer types in Checkout, where tollgate's sessions allow
// promotion codes, or in the customer portal). The coupon carries the code
// in its metadata tollgate_code, so the webhook names the code a discount
// was cashed with without asking Stripe (discounts.go).

// metaCode is the coupon metadata key that holds its promotion code.
const metaCode = "tollgate_code"

// Coupon durations, as Stripe names them.
const (
	DurationOnce      = "once"
	DurationRepeating = "repeating"
	DurationForever   = "forever"
)

// Limits of a coupon.
const (
	maxCodeLength  = 64
	maxCouponMonth = 120 // duration_in_months
	couponsListed  = 100 // promotion codes one list answers (Stripe's page)
)

// CouponRequest is a coupon and its promotion code.
type CouponRequest struct {
	// Code is what customers type: 1 to 64 letters and digits, unique
	// among active promotion codes (Stripe compares without case).
	Code string `json:"code"`
	// PercentOff (0 < p ≤ 100) or AmountOff (minor units, with Currency):
	// exactly one.
	PercentOff float64 `json:"percent_off,omitempty"`
	AmountOff  int64   `json:"amount_off,omitempty"`
	Currency   string  `json:"currency,omitempty"`
	// Duration is once, repeating (DurationInMonths, 1…120) or forever.
	Duration         string `json:"duration"`
	DurationInMonths int64  `json:"duration_in_months,omitempty"`
	// MaxRedemptions bounds how often the code may be cashed; 0: no bound.
	MaxRedemptions int64 `json:"max_redemptions,omitempty"`
	// ExpiresAt is when the code stops being accepted; nil: never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Validate names every bad field; now bounds ExpiresAt. It does no I/O.
func (r CouponRequest) Validate(now time.Time) error {
	var errs []error
	if !validCode(r.Code) {
		errs = append(errs, fmt.Errorf("code: %q must be 1 to %d letters and digits", r.Code, maxCodeLength))
	}
	switch {
	case (r.PercentOff != 0) == (r.AmountOff != 0):
		errs = append(errs, errors.New("percent_off or amount_off: exactly one is required"))
	case r.PercentOff < 0 || r.PercentOff > 100:
		errs = append(errs, fmt.Errorf("percent_off: %v must be above 0 and at most 100", r.PercentOff))
	case r.AmountOff < 0 || r.AmountOff > maxItemAmount:
		errs = append(errs, fmt.Errorf("amount_off: %d must be between 1 and %d (minor units)", r.AmountOff, maxItemAmount))
	case r.AmountOff > 0 && !isCurrency(r.Currency):
		errs = append(errs, fmt.Errorf("currency: %q is not a three-letter ISO code (required with amount_off)", r.Currency))
	case r.PercentOff != 0 && r.Currency != "":
		errs = append(errs, errors.New("currency: only with amount_off"))
	}
	switch r.Duration {
	case DurationRepeating:
		if r.DurationInMonths < 1 || r.DurationInMonths > maxCouponMonth {
			errs = append(errs, fmt.Errorf("duration_in_months: %d must be between 1 and %d with duration repeating", r.DurationInMonths, maxCouponMonth))
		}
	case DurationOnce, DurationForever:
		if r.DurationInMonths != 0 {
			errs = append(errs, fmt.Errorf("duration_in_months: only with duration repeating (duration is %s)", r.Duration))
		}
	default:
		errs = append(errs, fmt.Errorf("duration: %q must be once, repeating or forever", r.Duration))
	}
	if r.MaxRedemptions < 0 {
		errs = append(errs, fmt.Errorf("max_redemptions: %d must be 0 (no bound) or more", r.MaxRedemptions))
	}
	if r.ExpiresAt != nil && !r.ExpiresAt.After(now) {
		errs = append(errs, fmt.Errorf("expires_at: %s is not in the future", r.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	return errors.Join(errs...)
}

func validCode(c string) bool {
	if c == "" || len(c) > maxCodeLength {
		return false
	}
	for _, r := range c {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// Coupon is a promotion code and its coupon as the admin API shows them.
type Coupon struct {
	Code             string     `json:"code"`
	PromotionCode    string     `json:"promotion_code"` // promo_…
	Coupon           string     `json:"coupon"`         // the coupon's id
	PercentOff       float64    `json:"percent_off,omitempty"`
	AmountOff        int64      `json:"amount_off,omitempty"`
	Currency         string     `json:"currency,omitempty"`
	Duration         string     `json:"duration"`
	DurationInMonths int64      `json:"duration_in_months,omitempty"`
	MaxRedemptions   int64      `json:"max_redemptions,omitempty"`
	TimesRedeemed    int64      `json:"times_redeemed"`
	ExpiresAt        *time.Time `json:"expires_at,omitempty"`
	Active           bool       `json:"active"`
	Created          time.Time  `json:"created"`
}

func couponOf(p *stripego.PromotionCode) Coupon {
	out := Coupon{Code: p.Code, PromotionCode: p.ID, MaxRedemptions: p.MaxRedemptions, TimesRedeemed: p.TimesRedeemed,
		Active: p.Active, Created: time.Unix(p.Created, 0).UTC()}
	if c := p.Coupon; c != nil {
		out.Coupon, out.PercentOff, out.AmountOff, out.Currency = c.ID, c.PercentOff, c.AmountOff, string(c.Currency)
		out.Duration, out.DurationInMonths = string(c.Duration), c.DurationInMonths
	}
	if p.ExpiresAt > 0 {
		at := time.Unix(p.ExpiresAt, 0).UTC()
		out.ExpiresAt = &at
	}
	return out
}

// couponClients are the API clients of coupons and promotion codes.
type couponClients struct {
	coupons *coupon.Client
	codes   *promotioncode.Client
}

func newCouponClients(b stripego.Backend, key string) *couponClients {
	return &couponClients{coupons: &coupon.Client{B: b, Key: key}, codes: &promotioncode.Client{B: b, Key: key}}
}

// CreateCoupon creates a coupon and its promotion code r.Code. When the
// code cannot be created (taken, Stripe down) the coupon is deleted again.
func (s *Stripe) CreateCoupon(ctx context.Context, r CouponRequest) (Coupon, error) {
	if err := r.Validate(s.now()); err != nil {
		return Coupon{}, fmt.Errorf("%w: %w", sites.ErrInvalid, err)
	}
	if s.api == nil {
		return Coupon{}, fmt.Errorf("%w: [billing.stripe] secret_key", ErrNotConfigured)
	}
	cp := &stripego.CouponParams{Name: stripego.String(r.Code), Duration: stripego.String(r.Duration)}
	switch {
	case r.PercentOff != 0:
		cp.PercentOff = stripego.Float64(r.PercentOff)
	default:
		cp.AmountOff, cp.Currency = stripego.Int64(r.AmountOff), stripego.String(r.Currency)
	}
	if r.Duration == DurationRepeating {
		cp.DurationInMonths = stripego.Int64(r.DurationInMonths)
	}
	cp.AddMetadata(metaCode, r.Code)
	cp.Context = ctx
	c, err := s.api.coupons.coupons.New(cp)
	if err != nil {
		return Coupon{}, upstream(err, "creating the coupon")
	}
	pp := &stripego.PromotionCodeParams{Coupon: stripego.String(c.ID), Code: stripego.String(r.Code)}
	if r.MaxRedemptions > 0 {
		pp.MaxRedemptions = stripego.Int64(r.MaxRedemptions)
	}
	if r.ExpiresAt != nil {
		pp.ExpiresAt = stripego.Int64(r.ExpiresAt.Unix())
	}
	pp.Context = ctx
	p, err := s.api.coupons.codes.New(pp)
	if err != nil {
		del := &stripego.CouponParams{}
		del.Context = ctx
		if _, derr := s.api.coupons.coupons.Del(c.ID, del); derr != nil {
			s.log.Warn("stripe: coupon without its promotion code not deleted", slog.String("coupon", c.ID), slog.Any("err", derr))
		}
		return Coupon{}, upstream(err, "creating promotion code "+r.Code)
	}
	if p.Coupon == nil || p.Coupon.ID == "" {
		p.Coupon = c
	}
	return couponOf(p), nil
}

// Coupons lists the newest promotion codes (at most 100), newest first,
// active or not.
func (s *Stripe) Coupons(ctx context.Context) ([]Coupon, error) {
	if s.api == nil {
		return nil, fmt.Errorf("%w: [billing.stripe] secret_key", ErrNotConfigured)
	}
	params := &stripego.PromotionCodeListParams{}
	params.Context = ctx
	params.Limit = stripego.Int64(couponsListed)
	params.Single = true
	out := []Coupon{}
	it := s.api.coupons.codes.List(params)
	for it.Next() {
		out = append(out, couponOf(it.PromotionCode()))
	}
	if err := it.Err(); err != nil {
		return nil, upstream(err, "listing promotion codes")
	}
	return out, nil
}
