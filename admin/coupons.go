package admin

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/billing/stripe"
)

// Coupons creates Stripe coupons with a promotion code and lists the
// codes. *stripe.Stripe implements it.
type Coupons interface {
	CreateCoupon(ctx context.Context, r stripe.CouponRequest) (stripe.Coupon, error)
	Coupons(ctx context.Context) ([]stripe.Coupon, error)
}

var _ Coupons = (*stripe.Stripe)(nil)

// CouponList is GET /v1/coupons: the newest 100 promotion codes, newest
// first, active or not.
type CouponList struct {
	Coupons []stripe.Coupon `json:"coupons"`
}

func (s *Server) createCoupon(w http.ResponseWriter, r *http.Request) error {
	if s.coupons == nil {
		return fmt.Errorf("%w: Stripe is not configured ([billing.stripe] secret_key)", errNotConfig)
	}
	var in stripe.CouponRequest
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if err := in.Validate(time.Now()); err != nil {
		return badRequest("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	c, err := s.coupons.CreateCoupon(r.Context(), in)
	if err != nil {
		return stripeError(err)
	}
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (s *Server) listCoupons(w http.ResponseWriter, r *http.Request) error {
	if s.coupons == nil {
		return fmt.Errorf("%w: Stripe is not configured ([billing.stripe] secret_key)", errNotConfig)
	}
	list, err := s.coupons.Coupons(r.Context())
	if err != nil {
		return stripeError(err)
	}
	writeJSON(w, http.StatusOK, CouponList{Coupons: list})
	return nil
}

// CreateCoupon creates a coupon and its promotion code.
func (c *Client) CreateCoupon(ctx context.Context, r stripe.CouponRequest) (stripe.Coupon, error) {
	var out stripe.Coupon
	_, err := c.do(ctx, http.MethodPost, "/v1/coupons", r, &out)
	return out, err
}

// Coupons lists the newest promotion codes.
func (c *Client) Coupons(ctx context.Context) ([]stripe.Coupon, error) {
	var out CouponList
	_, err := c.do(ctx, http.MethodGet, "/v1/coupons", nil, &out)
	return out.Coupons, err
}

func couponCreateCmd(fs *flag.FlagSet) runFunc {
	var in stripe.CouponRequest
	fs.Float64Var(&in.PercentOff, "percent-off", 0, "percent off, above 0 and at most 100 (or --amount-off)")
	fs.Int64Var(&in.AmountOff, "amount-off", 0, "amount off in minor units (cents), with --currency")
	fs.StringVar(&in.Currency, "currency", "", "three-letter currency of --amount-off")
	fs.StringVar(&in.Duration, "duration", stripe.DurationOnce, "once, repeating (with --months) or forever")
	fs.Int64Var(&in.DurationInMonths, "months", 0, "months a repeating coupon lasts")
	fs.Int64Var(&in.MaxRedemptions, "max-redemptions", 0, "how often the code may be cashed (0: no bound)")
	expires := fs.String("expires", "", "when the code stops being accepted: an RFC 3339 time or a lifetime such as 30d (default: never)")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		in.Code = args[0]
		if *expires != "" {
			at, err := expiryFlag(*expires)
			if err != nil {
				return output{}, err
			}
			in.ExpiresAt = &at
		}
		cp, err := c.CreateCoupon(ctx, in)
		return couponOutput(cp, cp), err
	}
}

func couponListCmd(ctx context.Context, c *Client, _ []string) (output, error) {
	list, err := c.Coupons(ctx)
	return couponOutput(list, list...), err
}

func couponOutput(value any, cs ...stripe.Coupon) output {
	o := output{value: value, header: []string{"CODE", "DISCOUNT", "DURATION", "REDEEMED", "EXPIRES", "ACTIVE", "PROMOTION-CODE"}}
	for _, c := range cs {
		discount := strconv.FormatFloat(c.PercentOff, 'f', -1, 64) + "%"
		if c.AmountOff != 0 {
			discount = fmt.Sprintf("%d %s", c.AmountOff, c.Currency)
		}
		duration := c.Duration
		if c.DurationInMonths > 0 {
			duration = fmt.Sprintf("%s (%d months)", c.Duration, c.DurationInMonths)
		}
		redeemed := strconv.FormatInt(c.TimesRedeemed, 10)
		if c.MaxRedemptions > 0 {
			redeemed += "/" + strconv.FormatInt(c.MaxRedemptions, 10)
		}
		expires := "never"
		if c.ExpiresAt != nil {
			expires = stamp(*c.ExpiresAt)
		}
		o.rows = append(o.rows, []string{c.Code, discount, duration, redeemed, expires, strconv.FormatBool(c.Active), c.PromotionCode})
	}
	return o
}
