package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/ratelimit"
	"github.com/tollgate-edge/tollgate/sites"
)

// credit shows the org's prepaid credit: the balance, the entries newest
// first, the form that redeems a credit code (with Codes) and, when top-ups
// are configured, the top-up form. After a redemption (?redeemed=CODE) it
// says which code was redeemed.
func (c *Console) credit(w http.ResponseWriter, r *http.Request, s *session) error {
	f := creditForms{}
	if code := credit.NormalizeCode(r.URL.Query().Get("redeemed")); credit.ValidCode(code) {
		f.Redeemed = code
	}
	return c.creditPage(w, r, s, http.StatusOK, f)
}

// creditForms is what the credit page's forms show again: a refusal's
// message and what was typed, or the code just redeemed.
type creditForms struct {
	TopUpError, Amount string
	CodeError, Code    string
	Redeemed           string
}

// creditPage renders the credit page with status and the forms' state.
func (c *Console) creditPage(w http.ResponseWriter, r *http.Request, s *session, status int, f creditForms) error {
	data := map[string]any{"Configured": c.opts.Credits != nil}
	if c.opts.Credits != nil {
		balance, entries, err := c.opts.Credits.CreditHistory(r.Context(), s.tenant.Org)
		if err != nil {
			return err
		}
		slices.Reverse(entries)
		data["Balance"], data["Entries"], data["Currency"] = balance, entries, strings.ToUpper(c.opts.Credits.Currency())
		data["TopUps"] = c.topUpsReady()
		data["CanPay"] = s.tenant.Has(ScopeBilling)
		data["Forms"], data["Codes"] = f, c.opts.Codes != nil
	}
	c.render(w, s, status, "credit", "Prepaid credit", data)
	return nil
}

func (c *Console) topUpsReady() bool {
	return c.opts.Credits != nil && c.opts.TopUps != nil && c.opts.TopUps.CanTopUp()
}

// topUp redirects (303) to a Stripe Checkout session that buys the amount
// typed in the form. A bad amount, one TopUp refuses or a failure of Stripe
// shows the credit page again with the reason.
func (c *Console) topUp(w http.ResponseWriter, r *http.Request, s *session) error {
	if !c.topUpsReady() {
		return &pageError{status: http.StatusNotFound, msg: "Topping up credit online is not available here. Contact the operator."}
	}
	typed := r.PostFormValue("amount")
	amount, err := parseAmount(typed)
	if err != nil {
		return c.creditPage(w, r, s, http.StatusBadRequest, creditForms{TopUpError: err.Error(), Amount: typed})
	}
	u, err := c.opts.TopUps.TopUp(r.Context(), s.tenant.Org, amount)
	switch {
	case errors.Is(err, sites.ErrInvalid):
		msg := "This amount cannot be paid: " + strings.TrimPrefix(err.Error(), sites.ErrInvalid.Error()+": ") + "."
		return c.creditPage(w, r, s, http.StatusBadRequest, creditForms{TopUpError: msg, Amount: typed})
	case errors.Is(err, sites.ErrConflict), errors.Is(err, sites.ErrNotFound):
		return c.creditPage(w, r, s, http.StatusConflict, creditForms{TopUpError: "This cannot be done: " + err.Error() + ".", Amount: typed})
	case err != nil:
		c.log.Error("console: top-up link", "org", s.tenant.Org, "err", err)
		return c.creditPage(w, r, s, http.StatusBadGateway, creditForms{TopUpError: "The payment provider could not be reached. Try again in a moment.", Amount: typed})
	}
	http.Redirect(w, r, u, http.StatusSeeOther)
	return nil
}

// codeRefusals are the credit page's words for each refusal of a code.
var codeRefusals = []struct {
	err    error
	status int
	msg    string
}{
	{credit.ErrCodeNotFound, http.StatusUnprocessableEntity, "This code is not valid. Check it and try again."},
	{credit.ErrCodeDisabled, http.StatusUnprocessableEntity, "This code is not valid. Check it and try again."},
	{credit.ErrCodeExpired, http.StatusUnprocessableEntity, "This code has expired."},
	{credit.ErrCodeUsedUp, http.StatusConflict, "This code has been redeemed as often as it may be."},
	{credit.ErrCodeAlreadyRedeemed, http.StatusConflict, "This organization has redeemed this code already."},
	{billing.ErrCodeTries, http.StatusTooManyRequests, "Too many codes tried in a short time. Wait a minute and try again."},
}

// redeem redeems the code typed for the org and redirects (303) to the
// credit page, which names it; a refused code shows the page again with
// the reason.
func (c *Console) redeem(w http.ResponseWriter, r *http.Request, s *session) error {
	if c.opts.Codes == nil || c.opts.Credits == nil {
		return &pageError{status: http.StatusNotFound, msg: "Credit codes are not kept here."}
	}
	typed := r.PostFormValue("code")
	res, err := c.opts.Codes.RedeemCode(r.Context(), s.tenant.Org, typed, billing.ActorTenant)
	for _, ref := range codeRefusals {
		if errors.Is(err, ref.err) {
			if ref.status == http.StatusTooManyRequests {
				w.Header().Set(ratelimit.HeaderRetryAfter, strconv.Itoa(ratelimit.RetryAfter(billing.CodeTriesPerSecond)))
			}
			return c.creditPage(w, r, s, ref.status, creditForms{CodeError: ref.msg, Code: typed})
		}
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, Prefix+"credit?redeemed="+url.QueryEscape(res.Code.Code), http.StatusSeeOther)
	return nil
}

// parseAmount reads an amount as a person types it, in major units with
// up to two decimals ("25", "25.5", "25.50", "25,50") and returns it in
// minor units (2550); its error is the message the page shows. The bounds
// of the amount are TopUp's.
func parseAmount(s string) (int64, error) {
	s = strings.TrimSpace(s)
	whole, frac, dec := strings.Cut(strings.Replace(s, ",", ".", 1), ".")
	if whole == "" || len(frac) > 2 || dec && frac == "" || !digits(whole) || !digits(frac) {
		return 0, errors.New("Write the amount as a number with up to two decimals, such as 25 or 25.50.")
	}
	n, err := strconv.ParseInt(whole+(frac + "00")[:2], 10, 64)
	if err != nil {
		return 0, errors.New("This amount is too large.")
	}
	return n, nil
}

func digits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
