package stripe

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestCoupons against stripe-mock: a coupon with its code in metadata and
// a promotion code of that code; the list of promotion codes; a code Stripe
// refuses deletes the coupon again (422); the webhook reads a code from
// Stripe when the coupon's metadata has none.
func TestCoupons(t *testing.T) {
	sm := stripetest.Start(t)
	rec := &apiRecorder{base: http.DefaultTransport}
	s := newAPIStripe(t, sm, rec)
	ctx := context.Background()
	expires := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)

	for _, tc := range []struct {
		name        string
		r           CouponRequest
		coupon, pcf map[string]string // form fields of the coupon and the promotion code ("": absent)
	}{
		{"percent, repeating, bounded", CouponRequest{Code: "SPRING25", PercentOff: 25, Duration: DurationRepeating, DurationInMonths: 3,
			MaxRedemptions: 100, ExpiresAt: &expires},
			map[string]string{"percent_off": "25.0000", "amount_off": "", "duration": "repeating", "duration_in_months": "3", "name": "SPRING25", "metadata[tollgate_code]": "SPRING25"},
			map[string]string{"code": "SPRING25", "max_redemptions": "100", "expires_at": strconv.FormatInt(expires.Unix(), 10)}},
		{"amount, once", CouponRequest{Code: "WELCOME5", AmountOff: 500, Currency: "eur", Duration: DurationOnce},
			map[string]string{"amount_off": "500", "currency": "eur", "percent_off": "", "duration": "once", "duration_in_months": ""},
			map[string]string{"code": "WELCOME5", "max_redemptions": "", "expires_at": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := s.CreateCoupon(ctx, tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if c.PromotionCode == "" || c.Coupon == "" {
				t.Fatalf("coupon %+v", c)
			}
			calls, forms := rec.take()
			if strings.Join(calls, ", ") != "POST /v1/coupons, POST /v1/promotion_codes" {
				t.Fatalf("calls %v", calls)
			}
			for k, want := range tc.coupon {
				if got := forms[0].Get(k); got != want {
					t.Errorf("coupon %s = %q, want %q", k, got, want)
				}
			}
			for k, want := range tc.pcf {
				if got := forms[1].Get(k); got != want {
					t.Errorf("promotion code %s = %q, want %q", k, got, want)
				}
			}
			if forms[1].Get("coupon") == "" {
				t.Errorf("promotion code without coupon: %v", forms[1])
			}
		})
	}

	list, err := s.Coupons(ctx)
	if err != nil || len(list) == 0 || list[0].PromotionCode == "" {
		t.Fatalf("coupons: %+v, %v", list, err)
	}
	if calls, forms := rec.take(); len(calls) != 1 || calls[0] != "GET /v1/promotion_codes" || forms[0].Get("limit") != "100" {
		t.Fatalf("list calls %v %v", calls, forms)
	}

	// A code Stripe refuses (taken): 422 with Stripe's reason; the coupon
	// made for it is deleted.
	rec.fail = map[string]bool{"POST /v1/promotion_codes": true}
	_, err = s.CreateCoupon(ctx, CouponRequest{Code: "SPRING25", PercentOff: 10, Duration: DurationOnce})
	if !errors.Is(err, sites.ErrInvalid) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("taken code: %v", err)
	}
	if calls, _ := rec.take(); strings.Join(calls, ", ") != "POST /v1/coupons, POST /v1/promotion_codes, DELETE /v1/coupons/{id}" {
		t.Fatalf("calls of a taken code: %v", calls)
	}
	rec.fail = nil

	// A refused request calls nothing.
	if _, err := s.CreateCoupon(ctx, CouponRequest{Code: "X", Duration: DurationOnce}); !errors.Is(err, sites.ErrInvalid) {
		t.Fatalf("no discount: %v", err)
	}
	if calls, _ := rec.take(); len(calls) != 0 {
		t.Fatalf("a refused coupon called Stripe: %v", calls)
	}

	// A dashboard coupon (no tollgate_code): the webhook asks Stripe.
	code, err := s.codeOf(ctx, &discountObject{PromotionCode: "promo_1", Coupon: &discountCoupon{ID: "co_1"}})
	if err != nil || code == "" {
		t.Fatalf("code from Stripe: %q, %v", code, err)
	}
	if calls, _ := rec.take(); len(calls) != 1 || calls[0] != "GET /v1/promotion_codes/{id}" {
		t.Fatalf("code look-up calls %v", calls)
	}

	sm.Stop()
	if _, err := s.CreateCoupon(ctx, CouponRequest{Code: "DOWN", PercentOff: 10, Duration: DurationOnce}); !errors.Is(err, ErrUpstream) {
		t.Errorf("with Stripe down: %v", err)
	}
	if _, err := s.Coupons(ctx); !errors.Is(err, ErrUpstream) {
		t.Errorf("list with Stripe down: %v", err)
	}
}

func TestCouponRequestValidate(t *testing.T) {
	now := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	past := now.Add(-time.Hour)
	for _, tc := range []struct {
		name string
		r    CouponRequest
		keys []string // fields the error names; none: valid
	}{
		{"percent once", CouponRequest{Code: "SPRING25", PercentOff: 25, Duration: DurationOnce}, nil},
		{"amount forever", CouponRequest{Code: "A1", AmountOff: 500, Currency: "eur", Duration: DurationForever}, nil},
		{"repeating", CouponRequest{Code: "R", PercentOff: 100, Duration: DurationRepeating, DurationInMonths: 12}, nil},
		{"no code", CouponRequest{PercentOff: 25, Duration: DurationOnce}, []string{"code"}},
		{"code with a space", CouponRequest{Code: "SPRING 25", PercentOff: 25, Duration: DurationOnce}, []string{"code"}},
		{"code too long", CouponRequest{Code: strings.Repeat("A", 65), PercentOff: 25, Duration: DurationOnce}, []string{"code"}},
		{"neither discount", CouponRequest{Code: "X", Duration: DurationOnce}, []string{"percent_off or amount_off"}},
		{"both discounts", CouponRequest{Code: "X", PercentOff: 5, AmountOff: 5, Currency: "eur", Duration: DurationOnce}, []string{"exactly one"}},
		{"percent over 100", CouponRequest{Code: "X", PercentOff: 101, Duration: DurationOnce}, []string{"percent_off"}},
		{"negative amount", CouponRequest{Code: "X", AmountOff: -1, Currency: "eur", Duration: DurationOnce}, []string{"amount_off"}},
		{"amount without currency", CouponRequest{Code: "X", AmountOff: 5, Duration: DurationOnce}, []string{"currency"}},
		{"percent with currency", CouponRequest{Code: "X", PercentOff: 5, Currency: "eur", Duration: DurationOnce}, []string{"currency"}},
		{"no duration", CouponRequest{Code: "X", PercentOff: 5}, []string{"duration"}},
		{"repeating without months", CouponRequest{Code: "X", PercentOff: 5, Duration: DurationRepeating}, []string{"duration_in_months"}},
		{"months when once", CouponRequest{Code: "X", PercentOff: 5, Duration: DurationOnce, DurationInMonths: 3}, []string{"duration_in_months"}},
		{"negative redemptions", CouponRequest{Code: "X", PercentOff: 5, Duration: DurationOnce, MaxRedemptions: -1}, []string{"max_redemptions"}},
		{"expired", CouponRequest{Code: "X", PercentOff: 5, Duration: DurationOnce, ExpiresAt: &past}, []string{"expires_at"}},
		{"all wrong", CouponRequest{Code: "?", Duration: "weekly", MaxRedemptions: -2},
			[]string{"code", "percent_off or amount_off", "duration", "max_redemptions"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate(now)
			if len(tc.keys) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, k := range tc.keys {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("%q does not name %s", err, k)
				}
			}
		})
	}
}
