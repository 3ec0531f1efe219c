package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/ratelimit"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/tokens"
)

// CreditCodes keeps the redeemable credit codes. *billing.Billing
// implements it.
type CreditCodes interface {
	CreateCode(ctx context.Context, c credit.Code) (credit.Code, error)
	CreditCodes(ctx context.Context) ([]credit.Code, error)
	DisableCode(ctx context.Context, code string) (credit.Code, error)
	RedeemCode(ctx context.Context, org, code, actor string) (billing.CodeRedemption, error)
}

var _ CreditCodes = (*billing.Billing)(nil)

type (
	// CreditCodeRequest is the body of POST /v1/credit-codes.
	CreditCodeRequest struct {
		// Code is what tenants type (4-64 of A-Z, 0-9, '-', '_'; matched
		// without regard to case).
		Code string `json:"code"`
		// Amount is the credit one redemption grants, in minor units.
		Amount int64 `json:"amount"`
		// MaxRedemptions bounds the orgs that may redeem it; 0: no bound.
		MaxRedemptions int64      `json:"max_redemptions,omitempty"`
		ExpiresAt      *time.Time `json:"expires_at,omitempty"`
		Note           string     `json:"note,omitempty"`
	}
	// CreditCodeList is GET /v1/credit-codes: every code, by code.
	CreditCodeList struct {
		Currency string        `json:"currency"`
		Codes    []credit.Code `json:"codes"`
	}
	// RedeemRequest is the body of POST /v1/orgs/{id}/credits/redeem.
	RedeemRequest struct {
		Code string `json:"code"`
	}
	// RedeemResult is its answer: the grant and the balance after.
	RedeemResult struct {
		Code     string       `json:"code"`
		Amount   int64        `json:"amount"`
		Entry    credit.Entry `json:"entry"`
		Balance  int64        `json:"balance"`
		Currency string       `json:"currency"`
	}
)

// codeProblem is the problem of a refused code; nil for other errors.
func codeProblem(err error) *Problem {
	for _, c := range []struct {
		err    error
		status int
		code   reason.Code
	}{
		{credit.ErrCodeNotFound, http.StatusUnprocessableEntity, reason.CreditCodeInvalid},
		{credit.ErrCodeDisabled, http.StatusUnprocessableEntity, reason.CreditCodeInvalid},
		{credit.ErrCodeExpired, http.StatusUnprocessableEntity, reason.CreditCodeExpired},
		{credit.ErrCodeUsedUp, http.StatusConflict, reason.CreditCodeUsedUp},
		{credit.ErrCodeAlreadyRedeemed, http.StatusConflict, reason.CreditCodeAlreadyRedeemed},
		{credit.ErrCodeExists, http.StatusConflict, reason.Conflict},
	} {
		if errors.Is(err, c.err) {
			d := detail(err, c.err)
			if c.err == credit.ErrCodeDisabled || c.err == credit.ErrCodeNotFound {
				d = "no such credit code, or it was withdrawn: " + d
			} else {
				d = c.err.Error() + ": " + d
			}
			return status(c.status, c.code, d)
		}
	}
	return nil
}

func (s *Server) codesOrNotConfigured() error {
	if s.codes == nil || s.credits == nil {
		return fmt.Errorf("%w: prepaid credit", errNotConfig)
	}
	return nil
}

func (s *Server) createCreditCode(w http.ResponseWriter, r *http.Request) error {
	var in CreditCodeRequest
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if err := s.codesOrNotConfigured(); err != nil {
		return err
	}
	c, err := s.codes.CreateCode(r.Context(), credit.Code{Code: in.Code, Amount: in.Amount, MaxRedemptions: in.MaxRedemptions,
		ExpiresAt: in.ExpiresAt, Note: in.Note})
	if errors.Is(err, credit.ErrInvalid) {
		return fmt.Errorf("%w: %s", sites.ErrInvalid, detail(err, credit.ErrInvalid))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (s *Server) listCreditCodes(w http.ResponseWriter, r *http.Request) error {
	if err := s.codesOrNotConfigured(); err != nil {
		return err
	}
	list, err := s.codes.CreditCodes(r.Context())
	if err != nil {
		return err
	}
	if list == nil {
		list = []credit.Code{}
	}
	writeJSON(w, http.StatusOK, CreditCodeList{Currency: s.credits.Currency(), Codes: list})
	return nil
}

// disableCreditCode withdraws a code: refused from now on, listed with its
// redemptions.
func (s *Server) disableCreditCode(w http.ResponseWriter, r *http.Request) error {
	if err := s.codesOrNotConfigured(); err != nil {
		return err
	}
	c, err := s.codes.DisableCode(r.Context(), r.PathValue("code"))
	if errors.Is(err, credit.ErrCodeNotFound) {
		return fmt.Errorf("credit code %q: %w", r.PathValue("code"), sites.ErrNotFound)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// redeemCreditCode grants the org the code's credit: 201, or a problem
// (CREDIT_CODE_*) when the code is refused.
func (s *Server) redeemCreditCode(w http.ResponseWriter, r *http.Request) error {
	var in RedeemRequest
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if err := s.codesOrNotConfigured(); err != nil {
		return err
	}
	actor := billing.ActorOperator
	if tenantOf(r) != nil {
		actor = billing.ActorTenant
	}
	res, err := s.codes.RedeemCode(r.Context(), r.PathValue("id"), in.Code, actor)
	if errors.Is(err, billing.ErrCodeTries) {
		wait := ratelimit.RetryAfter(billing.CodeTriesPerSecond)
		writeRateLimited(w, strconv.Itoa(wait),
			fmt.Sprintf("more than %d credit codes tried for this org in a short time; retry after %d s", billing.CodeTriesBurst, wait))
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, RedeemResult{Code: res.Code.Code, Amount: res.Code.Amount, Entry: res.Entry,
		Balance: res.Balance, Currency: s.credits.Currency()})
	return nil
}

// CreateCreditCode creates a redeemable credit code.
func (c *Client) CreateCreditCode(ctx context.Context, in CreditCodeRequest) (credit.Code, error) {
	var out credit.Code
	_, err := c.do(ctx, http.MethodPost, "/v1/credit-codes", in, &out)
	return out, err
}

// CreditCodes lists every credit code.
func (c *Client) CreditCodes(ctx context.Context) (CreditCodeList, error) {
	var out CreditCodeList
	_, err := c.do(ctx, http.MethodGet, "/v1/credit-codes", nil, &out)
	return out, err
}

// DisableCreditCode withdraws a credit code.
func (c *Client) DisableCreditCode(ctx context.Context, code string) (credit.Code, error) {
	var out credit.Code
	_, err := c.do(ctx, http.MethodDelete, "/v1/credit-codes/"+url.PathEscape(code), nil, &out)
	return out, err
}

// RedeemCreditCode redeems code for org.
func (c *Client) RedeemCreditCode(ctx context.Context, org, code string) (RedeemResult, error) {
	var out RedeemResult
	_, err := c.do(ctx, http.MethodPost, "/v1/orgs/"+url.PathEscape(org)+"/credits/redeem", RedeemRequest{Code: code}, &out)
	return out, err
}

func creditCodeCreateCmd(fs *flag.FlagSet) runFunc {
	var in CreditCodeRequest
	fs.Int64Var(&in.MaxRedemptions, "max-redemptions", 0, "how many orgs may redeem it in all (0: no bound)")
	fs.StringVar(&in.Note, "note", "", "a note kept with the code")
	expires := fs.String("expires", "", "when the code stops being accepted: an RFC 3339 time or a lifetime such as 30d (default: never)")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		n, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			return output{}, usagef("AMOUNT: %q is not an integer (minor units)", args[1])
		}
		in.Code, in.Amount = args[0], n
		if *expires != "" {
			at, err := expiryFlag(*expires)
			if err != nil {
				return output{}, err
			}
			in.ExpiresAt = &at
		}
		code, err := c.CreateCreditCode(ctx, in)
		return creditCodeOutput(code, code), err
	}
}

// expiryFlag reads --expires: an RFC 3339 time or a lifetime from now.
func expiryFlag(s string) (time.Time, error) {
	if at, err := time.Parse(time.RFC3339, s); err == nil {
		return at, nil
	}
	d, err := tokens.Expiry(s)
	if err != nil {
		return time.Time{}, usagef("--expires: %q is neither an RFC 3339 time nor a lifetime such as 30d", s)
	}
	return time.Now().Add(d).UTC().Truncate(time.Second), nil
}

func creditCodeListCmd(ctx context.Context, c *Client, _ []string) (output, error) {
	list, err := c.CreditCodes(ctx)
	return creditCodeOutput(list, list.Codes...), err
}

func creditCodeOutput(value any, cs ...credit.Code) output {
	o := output{value: value, header: []string{"CODE", "AMOUNT", "REDEEMED", "EXPIRES", "STATE", "NOTE"}}
	for _, c := range cs {
		redeemed := strconv.FormatInt(c.Redeemed, 10)
		if c.MaxRedemptions > 0 {
			redeemed += "/" + strconv.FormatInt(c.MaxRedemptions, 10)
		}
		expires, state := "never", "active"
		if c.ExpiresAt != nil {
			expires = stamp(*c.ExpiresAt)
		}
		if c.Disabled {
			state = "disabled"
		}
		o.rows = append(o.rows, []string{c.Code, strconv.FormatInt(c.Amount, 10), redeemed, expires, state, c.Note})
	}
	return o
}

func creditRedeemCmd(ctx context.Context, c *Client, args []string) (output, error) {
	res, err := c.RedeemCreditCode(ctx, args[0], args[1])
	return output{value: res, msg: fmt.Sprintf("redeemed %s: %d %s granted (%s), balance %d %s",
		res.Code, res.Amount, res.Currency, res.Entry.ID, res.Balance, res.Currency)}, err
}
