package admin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/sites"
)

// Credits is the prepaid credit of orgs. *billing.Billing implements it.
type Credits interface {
	// Credit appends an entry to the org's ledger (appended false: its
	// source is there already, the stored entry is returned).
	Credit(ctx context.Context, e credit.Entry) (stored credit.Entry, appended bool, balance int64, err error)
	// CreditHistory is the org's balance and entries, oldest first.
	CreditHistory(ctx context.Context, org string) (balance int64, entries []credit.Entry, err error)
	// Currency is the currency of every amount.
	Currency() string
}

// TopUps makes the Stripe Checkout links of credit top-ups.
// *stripe.Stripe implements it.
type TopUps interface {
	TopUp(ctx context.Context, org string, amount int64) (string, error)
}

var _ Credits = (*billing.Billing)(nil)

type (
	// CreditRequest is the body of POST /v1/orgs/{id}/credits.
	CreditRequest struct {
		Amount int64 `json:"amount"`
		// Kind is grant (default), refund (both > 0) or expiry (< 0).
		Kind credit.Kind `json:"kind,omitempty"`
		// Source is the idempotency key; sending the same one again
		// changes nothing. Default: a new "op_<hex>".
		Source string `json:"source,omitempty"`
		Note   string `json:"note,omitempty"`
	}
	// CreditResult is the answer of POST /v1/orgs/{id}/credits: the
	// entry (the stored one when its source existed: appended false) and
	// the balance after.
	CreditResult struct {
		Entry    credit.Entry `json:"entry"`
		Appended bool         `json:"appended"`
		Balance  int64        `json:"balance"`
		Currency string       `json:"currency"`
	}
	// CreditHistory is the answer of GET /v1/orgs/{id}/credits.
	CreditHistory struct {
		Org      string         `json:"org"`
		Currency string         `json:"currency"`
		Balance  int64          `json:"balance"`
		Entries  []credit.Entry `json:"entries"`
	}
	// TopUpRequest is the body of POST /v1/orgs/{id}/credits/checkout.
	TopUpRequest struct {
		Amount int64 `json:"amount"`
	}
)

// grantCredit appends the operator's entry: 201 when appended, 200 when
// its source was in the ledger already.
func (s *Server) grantCredit(w http.ResponseWriter, r *http.Request) error {
	var in CreditRequest
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if s.credits == nil {
		return fmt.Errorf("%w: prepaid credit", errNotConfig)
	}
	if in.Kind == "" {
		in.Kind = credit.Grant
	}
	if in.Kind != credit.Grant && in.Kind != credit.Refund && in.Kind != credit.Expiry {
		return badRequest("kind: %q must be grant, refund or expiry (top_up and usage are Stripe's and billing's)", in.Kind)
	}
	if in.Source == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		in.Source = "op_" + hex.EncodeToString(b[:])
	}
	e := credit.Entry{Org: r.PathValue("id"), Amount: in.Amount, Kind: in.Kind, Source: in.Source, Actor: billing.ActorOperator, Note: in.Note}
	stored, appended, bal, err := s.credits.Credit(r.Context(), e)
	if errors.Is(err, credit.ErrInvalid) {
		return badRequest("%v", err)
	}
	if errors.Is(err, billing.ErrNoLedger) {
		return fmt.Errorf("%w: %v", errNotConfig, err)
	}
	if err != nil {
		return err
	}
	status := http.StatusOK
	if appended {
		status = http.StatusCreated
	}
	writeJSON(w, status, CreditResult{Entry: stored, Appended: appended, Balance: bal, Currency: s.credits.Currency()})
	return nil
}

// listCredits answers the org's balance and entries; Accept: text/csv (or
// format=csv) gives the entries as CSV.
func (s *Server) listCredits(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if s.reg.Snapshot().Orgs.Get(id) == nil {
		return fmt.Errorf("org %q: %w", id, sites.ErrNotFound)
	}
	if s.credits == nil {
		return fmt.Errorf("%w: prepaid credit", errNotConfig)
	}
	bal, es, err := s.credits.CreditHistory(r.Context(), id)
	if err != nil {
		return err
	}
	if r.URL.Query().Get("format") == "csv" || strings.Contains(r.Header.Get("Accept"), "text/csv") {
		rows := [][]string{{"id", "at", "kind", "amount", "balance", "currency", "source", "actor", "note"}}
		for _, e := range es {
			rows = append(rows, []string{e.ID, e.At.UTC().Format(time.RFC3339), string(e.Kind), strconv.FormatInt(e.Amount, 10),
				strconv.FormatInt(e.Balance, 10), s.credits.Currency(), e.Source, e.Actor, e.Note})
		}
		return writeCSV(w, rows)
	}
	if es == nil {
		es = []credit.Entry{}
	}
	writeJSON(w, http.StatusOK, CreditHistory{Org: id, Currency: s.credits.Currency(), Balance: bal, Entries: es})
	return nil
}

// creditCheckout answers a Stripe Checkout link in which the tenant buys
// credit.
func (s *Server) creditCheckout(w http.ResponseWriter, r *http.Request) error {
	var in TopUpRequest
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if in.Amount <= 0 {
		return badRequest("amount: must be above 0 (minor units)")
	}
	if s.topUps == nil {
		return fmt.Errorf("%w: Stripe is not configured ([billing.stripe] secret_key)", errNotConfig)
	}
	return s.paymentLink(w, r, func(_ Payments, org string) (string, error) { return s.topUps.TopUp(r.Context(), org, in.Amount) })
}

// GrantCredit appends an operator's entry to org's ledger.
func (c *Client) GrantCredit(ctx context.Context, org string, in CreditRequest) (CreditResult, error) {
	var out CreditResult
	_, err := c.do(ctx, http.MethodPost, "/v1/orgs/"+url.PathEscape(org)+"/credits", in, &out)
	return out, err
}

// Credits fetches org's balance and entries.
func (c *Client) Credits(ctx context.Context, org string) (CreditHistory, error) {
	var out CreditHistory
	_, err := c.do(ctx, http.MethodGet, "/v1/orgs/"+url.PathEscape(org)+"/credits", nil, &out)
	return out, err
}

func creditGrantCmd(fs *flag.FlagSet) runFunc {
	var in CreditRequest
	kind := fs.String("kind", "grant", "grant or refund (add credit), expiry (takes it: a negative AMOUNT)")
	fs.StringVar(&in.Source, "source", "", "idempotency key: the same one again changes nothing (default: a new one)")
	fs.StringVar(&in.Note, "note", "", "a note kept with the entry")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		n, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			return output{}, fmt.Errorf("AMOUNT: %q is not an integer (minor units)", args[1])
		}
		in.Amount, in.Kind = n, credit.Kind(*kind)
		res, err := c.GrantCredit(ctx, args[0], in)
		msg := fmt.Sprintf("%s %d %s: balance %d %s", res.Entry.Kind, res.Entry.Amount, res.Entry.ID, res.Balance, res.Currency)
		if !res.Appended {
			msg = "source already in the ledger, nothing changed: " + msg
		}
		return output{value: res, msg: msg}, err
	}
}

func creditListCmd(ctx context.Context, c *Client, args []string) (output, error) {
	h, err := c.Credits(ctx, args[0])
	o := output{value: h, header: []string{"AT", "KIND", "AMOUNT", "BALANCE", "SOURCE", "ACTOR"}}
	for _, e := range h.Entries {
		o.rows = append(o.rows, []string{e.At.UTC().Format(time.RFC3339), string(e.Kind), strconv.FormatInt(e.Amount, 10),
			strconv.FormatInt(e.Balance, 10), e.Source, e.Actor})
	}
	return o, err
}
