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

	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/sites"
)

// Invoicing bills an org with one-off Stripe invoices and lists its
// invoices. *stripe.Stripe implements it.
type Invoicing interface {
	// CreateInvoice creates, finalizes and (with due days) sends an
	// invoice for org's Stripe customer.
	CreateInvoice(ctx context.Context, org string, r stripe.InvoiceRequest) (stripe.Invoice, error)
	// Invoices lists the newest invoices of org's customer.
	Invoices(ctx context.Context, org string) ([]stripe.Invoice, error)
}

var _ Invoicing = (*stripe.Stripe)(nil)

// InvoiceList is GET /v1/orgs/{id}/invoices: the newest 100, newest first.
type InvoiceList struct {
	Invoices []stripe.Invoice `json:"invoices"`
}

// invoicingFor checks the org of the path and that invoicing is
// configured.
func (s *Server) invoicingFor(r *http.Request) (string, error) {
	org := r.PathValue("id")
	if s.reg.Snapshot().Orgs.Get(org) == nil {
		return "", fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	if s.invoicing == nil {
		return "", fmt.Errorf("%w: Stripe is not configured ([billing.stripe] secret_key)", errNotConfig)
	}
	return org, nil
}

// headerIdempotencyKey is the request header of an idempotent creation,
// as in Stripe's API.
const headerIdempotencyKey = "Idempotency-Key"

// createInvoice is POST /v1/orgs/{id}/invoices. With an Idempotency-Key
// header (1 to 255 printable ASCII characters, else 400) a retry bills
// once: it answers 200 with the invoice the first creation made (see
// billing/stripe/invoicekeys.go); a creation answers 201.
func (s *Server) createInvoice(w http.ResponseWriter, r *http.Request) error {
	org, err := s.invoicingFor(r)
	if err != nil {
		return err
	}
	var in stripe.InvoiceRequest
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if keys, ok := r.Header[headerIdempotencyKey]; ok {
		if len(keys) != 1 {
			return badRequest("Idempotency-Key: sent %d times, want once", len(keys))
		}
		if err := stripe.CheckIdempotencyKey(keys[0]); err != nil {
			return badRequest("%v", err)
		}
		in.IdempotencyKey = keys[0]
	}
	if err := in.Validate(); err != nil {
		return badRequest("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	inv, err := s.invoicing.CreateInvoice(r.Context(), org, in)
	if err != nil {
		return stripeError(err)
	}
	code := http.StatusCreated
	if inv.Replayed {
		code = http.StatusOK
	}
	writeJSON(w, code, inv)
	return nil
}

func (s *Server) listInvoices(w http.ResponseWriter, r *http.Request) error {
	org, err := s.invoicingFor(r)
	if err != nil {
		return err
	}
	list, err := s.invoicing.Invoices(r.Context(), org)
	if err != nil {
		return stripeError(err)
	}
	writeJSON(w, http.StatusOK, InvoiceList{Invoices: list})
	return nil
}

// stripeError makes Stripe's ErrNotConfigured a 503; other errors map as
// they are (problemFor).
func stripeError(err error) error {
	if errors.Is(err, stripe.ErrNotConfigured) {
		return fmt.Errorf("%w: %v", errNotConfig, err)
	}
	return err
}

// CreateInvoice bills org with r's items, sending r.IdempotencyKey (if
// set) as the Idempotency-Key header: the same key again answers the
// invoice made the first time, with Replayed set.
func (c *Client) CreateInvoice(ctx context.Context, org string, r stripe.InvoiceRequest) (stripe.Invoice, error) {
	var out stripe.Invoice
	var h http.Header
	if r.IdempotencyKey != "" {
		h = http.Header{headerIdempotencyKey: {r.IdempotencyKey}}
	}
	_, err := c.doWith(ctx, http.MethodPost, "/v1/orgs/"+url.PathEscape(org)+"/invoices", h, r, &out)
	return out, err
}

// Invoices lists org's newest invoices.
func (c *Client) Invoices(ctx context.Context, org string) ([]stripe.Invoice, error) {
	var out InvoiceList
	_, err := c.do(ctx, http.MethodGet, "/v1/orgs/"+url.PathEscape(org)+"/invoices", nil, &out)
	return out.Invoices, err
}

// itemFlag collects --item "DESCRIPTION:AMOUNT" (amount in minor units).
type itemFlag struct{ items *[]stripe.InvoiceItem }

func (f itemFlag) String() string { return "" }

func (f itemFlag) Set(v string) error {
	i := strings.LastIndex(v, ":")
	if i < 0 {
		return fmt.Errorf("%q is not DESCRIPTION:AMOUNT, such as \"Setup fee:5000\"", v)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v[i+1:]), 10, 64)
	if err != nil {
		return fmt.Errorf("%q: the amount is not a whole number of minor units (cents)", v)
	}
	*f.items = append(*f.items, stripe.InvoiceItem{Description: strings.TrimSpace(v[:i]), Amount: n})
	return nil
}

// parseDue reads "14d" or "14" as days.
func parseDue(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
	if err != nil || n < 1 || n > stripe.MaxInvoiceDue {
		return 0, fmt.Errorf("%q: want days between 1d and %dd, such as 14d", s, stripe.MaxInvoiceDue)
	}
	return n, nil
}

func invoiceCreateCmd(fs *flag.FlagSet) runFunc {
	var in stripe.InvoiceRequest
	fs.Var(itemFlag{&in.Items}, "item", `a line "DESCRIPTION:AMOUNT", the amount in minor units (cents); repeat for each line`)
	due := fs.String("due", "", "days to pay, e.g. 14d: the invoice is sent (default: charged to the default payment method)")
	fs.StringVar(&in.Currency, "currency", "", "three-letter currency (default: the customer's)")
	fs.StringVar(&in.IdempotencyKey, "idempotency-key", "", "the same key again bills once and shows the first invoice: "+
		"pass one to make a script's retries safe (default: a new random key for this invocation)")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		if len(in.Items) == 0 {
			return output{}, usagef("pass at least one --item DESCRIPTION:AMOUNT")
		}
		if *due != "" {
			n, err := parseDue(*due)
			if err != nil {
				return output{}, usagef("--due: %v", err)
			}
			in.DueDays = n
		}
		if in.IdempotencyKey == "" {
			in.IdempotencyKey = newIdempotencyKey()
		}
		inv, err := c.CreateInvoice(ctx, args[0], in)
		o := invoiceOutput(inv, inv)
		if inv.Replayed {
			o.msg = "created before with this idempotency key; nothing new was billed"
		}
		return o, err
	}
}

// newIdempotencyKey is a random key of one CLI invocation: the client's
// own resends (a 429, sendWith) carry it.
func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return "cli-" + hex.EncodeToString(b[:])
}

func invoiceListCmd(ctx context.Context, c *Client, args []string) (output, error) {
	list, err := c.Invoices(ctx, args[0])
	return invoiceOutput(list, list...), err
}

func invoiceOutput(value any, invs ...stripe.Invoice) output {
	o := output{value: value, header: []string{"ID", "NUMBER", "AMOUNT-DUE", "STATUS", "CREATED", "DUE", "URL", "PDF"}}
	for _, in := range invs {
		due := "-"
		if in.DueDate != nil {
			due = stamp(*in.DueDate)
		}
		o.rows = append(o.rows, []string{in.ID, dash(in.Number), fmt.Sprintf("%d %s", in.AmountDue, in.Currency), in.Status,
			stamp(in.Created), due, dash(in.HostedInvoiceURL), dash(in.InvoicePDF)})
	}
	return o
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
