package console

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/tollgate-edge/tollgate/sites"
)

// credit shows the org's prepaid credit: the balance, the entries newest
// first and, when top-ups are configured, the top-up form.
func (c *Console) credit(w http.ResponseWriter, r *http.Request, s *session) error {
	return c.creditPage(w, r, s, http.StatusOK, "", "")
}

// creditPage renders the credit page with status; a failed top-up passes
// its message and the amount typed, shown with the form.
func (c *Console) creditPage(w http.ResponseWriter, r *http.Request, s *session, status int, topUpErr, amount string) error {
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
		data["TopUpError"], data["Amount"] = topUpErr, amount
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
		return c.creditPage(w, r, s, http.StatusBadRequest, err.Error(), typed)
	}
	u, err := c.opts.TopUps.TopUp(r.Context(), s.tenant.Org, amount)
	switch {
	case errors.Is(err, sites.ErrInvalid):
		msg := "This amount cannot be paid: " + strings.TrimPrefix(err.Error(), sites.ErrInvalid.Error()+": ") + "."
		return c.creditPage(w, r, s, http.StatusBadRequest, msg, typed)
	case errors.Is(err, sites.ErrConflict), errors.Is(err, sites.ErrNotFound):
		return c.creditPage(w, r, s, http.StatusConflict, "This cannot be done: "+err.Error()+".", typed)
	case err != nil:
		c.log.Error("console: top-up link", "org", s.tenant.Org, "err", err)
		return c.creditPage(w, r, s, http.StatusBadGateway, "The payment provider could not be reached. Try again in a moment.", typed)
	}
	http.Redirect(w, r, u, http.StatusSeeOther)
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
