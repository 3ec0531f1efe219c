package admin

import (
	"context"
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

func (s *Server) createInvoice(w http.ResponseWriter, r *http.Request) error {
	org, err := s.invoicingFor(r)
	if err != nil {
		return err
	}
	var in stripe.InvoiceRequest
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if err := in.Validate(); err != nil {
		return badRequest("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	inv, err := s.invoicing.CreateInvoice(r.Context(), org, in)
	if err != nil {
		return stripeError(err)
	}
	writeJSON(w, http.StatusCreated, inv)
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

// CreateInvoice bills org with r's items.
func (c *Client) CreateInvoice(ctx context.Context, org string, r stripe.InvoiceRequest) (stripe.Invoice, error) {
	var out stripe.Invoice
	_, err := c.do(ctx, http.MethodPost, "/v1/orgs/"+url.PathEscape(org)+"/invoices", r, &out)
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
		inv, err := c.CreateInvoice(ctx, args[0], in)
		return invoiceOutput(inv, inv), err
	}
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
