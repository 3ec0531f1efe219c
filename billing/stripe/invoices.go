package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	stripeinvoice "github.com/stripe/stripe-go/v76/invoice"
	"github.com/stripe/stripe-go/v76/invoiceitem"
	"github.com/tollgate-edge/tollgate/sites"
)

// Operator invoices: one-off Stripe invoices for an org's customer, with
// line items the operator names (a setup fee, a migration). Their
// invoice.paid and invoice.payment_failed events are handled like any
// other invoice's (webhook.go): paid makes the org active, a failed
// payment past_due.
//
// The invoice is created as a draft that takes no pending invoice items
// (pending_invoice_items_behavior "exclude"), so nothing else the customer
// owes is swept into it and its own items, created on it by id, are never
// swept into a subscription's invoice. It is then finalized and:
//
//   - with DueDays (collection_method send_invoice): sent, Stripe emails it
//     with its hosted payment page and the customer has DueDays to pay;
//   - without (charge_automatically): Stripe charges the customer's default
//     payment method (auto_advance; it retries as the account's settings
//     say), and nothing is sent.
//
// A draft whose items or finalization fail is deleted with its items, so a
// retry does not leave a second one. An invoice finalized but not sent is
// answered with Sent false: it is open and payable on its hosted page;
// creating it again would bill twice, unless with the same idempotency
// key (invoicekeys.go).

// Limits of an operator invoice.
const (
	MaxInvoiceItems = 100        // line items per invoice
	MaxInvoiceDue   = 365        // days_until_due
	maxItemAmount   = 99_999_999 // Stripe's largest amount in minor units
	maxDescription  = 500        // characters of an item's description
	invoicesListed  = 100        // invoices one list answers (Stripe's page)
)

// InvoiceItem is one line of an operator invoice.
type InvoiceItem struct {
	Description string `json:"description"`
	// Amount is in minor units of the invoice's currency (cents), > 0.
	Amount int64 `json:"amount"`
}

// InvoiceRequest is what the operator bills an org for.
type InvoiceRequest struct {
	Items []InvoiceItem `json:"items"`
	// DueDays is how many days the customer has to pay a sent invoice
	// (1…365). 0: charged automatically to the default payment method.
	DueDays int `json:"due_days,omitempty"`
	// Currency is a three-letter ISO code; "": the customer's currency
	// (else the Stripe account's default).
	Currency string `json:"currency,omitempty"`
	// IdempotencyKey makes a retried creation bill once (see
	// invoicekeys.go); "": none. The admin API reads it from the
	// Idempotency-Key header, not the body.
	IdempotencyKey string `json:"-"`
}

// Validate names every bad field; it does no I/O.
func (r InvoiceRequest) Validate() error {
	var errs []error
	switch n := len(r.Items); {
	case n == 0:
		errs = append(errs, errors.New("items: at least one item is required"))
	case n > MaxInvoiceItems:
		errs = append(errs, fmt.Errorf("items: at most %d (has %d)", MaxInvoiceItems, n))
	}
	for i, it := range r.Items {
		if d := strings.TrimSpace(it.Description); d == "" || len(d) > maxDescription {
			errs = append(errs, fmt.Errorf("items[%d].description: 1 to %d characters", i, maxDescription))
		}
		if it.Amount <= 0 || it.Amount > maxItemAmount {
			errs = append(errs, fmt.Errorf("items[%d].amount: %d must be between 1 and %d (minor units)", i, it.Amount, maxItemAmount))
		}
	}
	if r.DueDays < 0 || r.DueDays > MaxInvoiceDue {
		errs = append(errs, fmt.Errorf("due_days: %d must be between 1 and %d, or 0 to charge automatically", r.DueDays, MaxInvoiceDue))
	}
	if r.Currency != "" && !isCurrency(r.Currency) {
		errs = append(errs, fmt.Errorf("currency: %q is not a three-letter ISO code", r.Currency))
	}
	if r.IdempotencyKey != "" {
		if err := CheckIdempotencyKey(r.IdempotencyKey); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isCurrency reports whether c looks like an ISO 4217 code ("eur", "USD").
func isCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for _, r := range strings.ToLower(c) {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	return true
}

// Invoice is a Stripe invoice as the admin API shows it.
type Invoice struct {
	ID               string     `json:"id"`
	Number           string     `json:"number"`
	AmountDue        int64      `json:"amount_due"` // minor units
	AmountPaid       int64      `json:"amount_paid"`
	Currency         string     `json:"currency"`
	Status           string     `json:"status"` // draft, open, paid, uncollectible, void
	CollectionMethod string     `json:"collection_method"`
	Created          time.Time  `json:"created"`
	DueDate          *time.Time `json:"due_date,omitempty"`
	HostedInvoiceURL string     `json:"hosted_invoice_url"`
	InvoicePDF       string     `json:"invoice_pdf"`
	// Sent is set by CreateInvoice only: the invoice was sent (send_invoice).
	Sent bool `json:"sent,omitempty"`
	// Replayed is set by CreateInvoice only: an earlier creation with the
	// same idempotency key made this invoice, and nothing was created
	// (nor sent: Sent is false, whether or not the first creation sent it).
	Replayed bool `json:"replayed,omitempty"`
}

func invoiceOf(in *stripego.Invoice) Invoice {
	out := Invoice{ID: in.ID, Number: in.Number, AmountDue: in.AmountDue, AmountPaid: in.AmountPaid,
		Currency: string(in.Currency), Status: string(in.Status), CollectionMethod: string(in.CollectionMethod),
		Created: time.Unix(in.Created, 0).UTC(), HostedInvoiceURL: in.HostedInvoiceURL, InvoicePDF: in.InvoicePDF}
	if in.DueDate > 0 {
		due := time.Unix(in.DueDate, 0).UTC()
		out.DueDate = &due
	}
	return out
}

// ErrNoInvoiceCustomer: the org has no Stripe customer to invoice.
var ErrNoInvoiceCustomer = fmt.Errorf("the org has no Stripe customer to invoice: link one (stripe_customer) or subscribe through checkout first: %w", sites.ErrConflict)

// customerOf returns org's Stripe customer ("" when none).
func (s *Stripe) customerOf(org string) (string, error) {
	if s.api == nil || s.api.plans == nil {
		return "", fmt.Errorf("%w: [billing.stripe] secret_key", ErrNotConfigured)
	}
	_, customer, ok := s.api.plans.PlanOf(org)
	if !ok {
		return "", fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	return customer, nil
}

// CreateInvoice creates, finalizes and (with DueDays) sends an invoice of
// r's items for org's Stripe customer. See the comment at the top of the
// file for the steps, and invoicekeys.go for r.IdempotencyKey: a key an
// earlier creation used answers that creation's invoice with Replayed set.
func (s *Stripe) CreateInvoice(ctx context.Context, org string, r InvoiceRequest) (Invoice, error) {
	if err := r.Validate(); err != nil {
		return Invoice{}, fmt.Errorf("%w: %w", sites.ErrInvalid, err)
	}
	customer, err := s.customerOf(org)
	if err != nil {
		return Invoice{}, err
	}
	if customer == "" {
		return Invoice{}, ErrNoInvoiceCustomer
	}
	if r.IdempotencyKey != "" {
		if inv, found, err := s.replay(ctx, customer, r); err != nil || found {
			return inv, err
		}
	}
	keys := newInvoiceKeys(r.IdempotencyKey)
	draft, err := s.newDraft(ctx, org, customer, r, keys)
	if err != nil {
		return Invoice{}, err
	}
	fin := &stripego.InvoiceFinalizeInvoiceParams{AutoAdvance: stripego.Bool(true)}
	fin.Context = ctx
	keys.set(&fin.Params, "finalize")
	inv, err := s.api.invoices.FinalizeInvoice(draft.invoice, fin)
	if err != nil {
		s.dropDraft(ctx, draft.invoice, draft.items)
		return Invoice{}, upstream(err, "finalizing invoice "+draft.invoice)
	}
	if r.DueDays == 0 {
		return invoiceOf(inv), nil
	}
	send := &stripego.InvoiceSendInvoiceParams{}
	send.Context = ctx
	keys.set(&send.Params, "send")
	sent, err := s.api.invoices.SendInvoice(inv.ID, send)
	if err != nil {
		s.log.Warn("stripe: invoice finalized but not sent; it is payable on its hosted page", slog.String("org", org),
			slog.String("invoice", inv.ID), slog.Any("err", err))
		return invoiceOf(inv), nil
	}
	out := invoiceOf(sent)
	out.Sent = true
	return out, nil
}

// draftInvoice is a draft and the ids of the items created on it.
type draftInvoice struct {
	invoice string
	items   []string
}

// newDraft creates the draft of r for customer and r's items on it; on an
// item's failure the draft is dropped.
func (s *Stripe) newDraft(ctx context.Context, org, customer string, r InvoiceRequest, keys invoiceKeys) (draftInvoice, error) {
	params := &stripego.InvoiceParams{Customer: stripego.String(customer), AutoAdvance: stripego.Bool(true),
		PendingInvoiceItemsBehavior: stripego.String("exclude"),
		CollectionMethod:            stripego.String(string(stripego.InvoiceCollectionMethodChargeAutomatically))}
	if r.DueDays > 0 {
		params.CollectionMethod = stripego.String(string(stripego.InvoiceCollectionMethodSendInvoice))
		params.DaysUntilDue = stripego.Int64(int64(r.DueDays))
	}
	if r.Currency != "" {
		params.Currency = stripego.String(strings.ToLower(r.Currency))
	}
	params.AddMetadata(metaOrg, org)
	if r.IdempotencyKey != "" {
		params.AddMetadata(metaIdemKey, r.IdempotencyKey)
		params.AddMetadata(metaIdemRequest, r.fingerprint())
	}
	params.Context = ctx
	keys.set(&params.Params, "invoice")
	draft, err := s.api.invoices.New(params)
	if err != nil {
		return draftInvoice{}, upstream(err, "creating the invoice")
	}
	d := draftInvoice{invoice: draft.ID}
	for i, it := range r.Items {
		p := &stripego.InvoiceItemParams{Customer: stripego.String(customer), Invoice: stripego.String(draft.ID),
			Amount: stripego.Int64(it.Amount), Description: stripego.String(strings.TrimSpace(it.Description))}
		p.Currency = params.Currency
		p.Context = ctx
		keys.set(&p.Params, "item:"+strconv.Itoa(i))
		item, err := s.api.items.New(p)
		if err != nil {
			s.dropDraft(ctx, draft.ID, d.items)
			return draftInvoice{}, upstream(err, "adding an item to invoice "+draft.ID)
		}
		d.items = append(d.items, item.ID)
	}
	return d, nil
}

// dropDraft deletes a draft invoice that could not be completed and the
// items created on it, so none is left to be billed later. Failures are
// logged: the draft is then visible in the dashboard.
func (s *Stripe) dropDraft(ctx context.Context, invoice string, items []string) {
	for _, id := range items {
		p := &stripego.InvoiceItemParams{}
		p.Context = ctx
		if _, err := s.api.items.Del(id, p); err != nil {
			s.log.Warn("stripe: invoice item of a failed invoice not deleted", slog.String("item", id), slog.Any("err", err))
		}
	}
	p := &stripego.InvoiceParams{}
	p.Context = ctx
	if _, err := s.api.invoices.Del(invoice, p); err != nil {
		s.log.Warn("stripe: draft of a failed invoice not deleted", slog.String("invoice", invoice), slog.Any("err", err))
	}
}

// Invoices lists the newest invoices (at most 100) of org's Stripe
// customer, newest first; none when it has no customer.
func (s *Stripe) Invoices(ctx context.Context, org string) ([]Invoice, error) {
	customer, err := s.customerOf(org)
	if err != nil || customer == "" {
		return []Invoice{}, err
	}
	params := &stripego.InvoiceListParams{Customer: stripego.String(customer)}
	params.Context = ctx
	params.Limit = stripego.Int64(invoicesListed)
	params.Single = true // one page: the newest
	out := []Invoice{}
	it := s.api.invoices.List(params)
	for it.Next() {
		out = append(out, invoiceOf(it.Invoice()))
	}
	if err := it.Err(); err != nil {
		return nil, upstream(err, "listing invoices")
	}
	return out, nil
}

// upstream maps an error of Stripe's API: a request Stripe refused as
// invalid (a code already taken, a currency the customer cannot use) is
// sites.ErrInvalid with Stripe's message; an idempotency key reused with
// other parameters (idempotency_error) or still in use by a concurrent
// request (409) is sites.ErrConflict with Stripe's message; anything else
// is ErrUpstream.
func upstream(err error, what string) error {
	var se *stripego.Error
	if errors.As(err, &se) && se.Type == stripego.ErrorTypeInvalidRequest && se.HTTPStatusCode == 400 && se.Msg != "" {
		return fmt.Errorf("%w: %s: Stripe: %s", sites.ErrInvalid, what, se.Msg)
	}
	if errors.As(err, &se) && (se.Type == stripego.ErrorTypeIdempotency || se.HTTPStatusCode == 409) && se.Msg != "" {
		return fmt.Errorf("%s: Stripe: %s: %w", what, se.Msg, sites.ErrConflict)
	}
	return fmt.Errorf("%w: %s: %w", ErrUpstream, what, err)
}

// api holds the clients of operator invoices and coupons; nil without a
// secret key.
type api struct {
	plans    Plans // nil: no invoices (the org's customer is unknown)
	invoices *stripeinvoice.Client
	items    *invoiceitem.Client
	coupons  *couponClients
}

func newAPI(plans Plans, b stripego.Backend, key string) *api {
	if key == "" {
		return nil
	}
	return &api{plans: plans, invoices: &stripeinvoice.Client{B: b, Key: key}, items: &invoiceitem.Client{B: b, Key: key},
		coupons: newCouponClients(b, key)}
}
