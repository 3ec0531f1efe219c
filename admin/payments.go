package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/sites"
)

// Payments makes the links a tenant follows to pay. *stripe.Stripe
// implements it.
type Payments interface {
	// Checkout returns a Stripe Checkout URL in which org subscribes to a
	// plan above its own.
	Checkout(ctx context.Context, org, plan string) (string, error)
	// Portal returns a Stripe customer-portal URL for org.
	Portal(ctx context.Context, org string) (string, error)
}

type (
	// CheckoutRequest is the body of POST /v1/orgs/{id}/checkout.
	CheckoutRequest struct {
		Plan string `json:"plan"`
	}
	// PaymentLink is the answer of POST /v1/orgs/{id}/checkout and
	// /portal: the URL to send the tenant to (valid for a short time, as
	// Stripe sets it).
	PaymentLink struct {
		URL string `json:"url"`
	}
)

func (s *Server) checkout(w http.ResponseWriter, r *http.Request) error {
	var in CheckoutRequest
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if in.Plan == "" {
		return badRequest("plan: required")
	}
	return s.paymentLink(w, r, func(p Payments, org string) (string, error) { return p.Checkout(r.Context(), org, in.Plan) })
}

func (s *Server) portal(w http.ResponseWriter, r *http.Request) error {
	return s.paymentLink(w, r, func(p Payments, org string) (string, error) { return p.Portal(r.Context(), org) })
}

// paymentLink answers the link make returns for the org of the path.
func (s *Server) paymentLink(w http.ResponseWriter, r *http.Request, make func(Payments, string) (string, error)) error {
	org := r.PathValue("id")
	if s.reg.Snapshot().Orgs.Get(org) == nil {
		return fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	if s.payments == nil {
		return fmt.Errorf("%w: Stripe is not configured ([billing.stripe] secret_key)", errNotConfig)
	}
	link, err := make(s.payments, org)
	if errors.Is(err, stripe.ErrNotConfigured) {
		return fmt.Errorf("%w: %v", errNotConfig, err)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, PaymentLink{URL: link})
	return nil
}

// Checkout asks for a Stripe Checkout URL in which org subscribes to plan.
func (c *Client) Checkout(ctx context.Context, org, plan string) (string, error) {
	var out PaymentLink
	_, err := c.do(ctx, http.MethodPost, "/v1/orgs/"+url.PathEscape(org)+"/checkout", CheckoutRequest{Plan: plan}, &out)
	return out.URL, err
}

// Portal asks for a Stripe customer-portal URL for org.
func (c *Client) Portal(ctx context.Context, org string) (string, error) {
	var out PaymentLink
	_, err := c.do(ctx, http.MethodPost, "/v1/orgs/"+url.PathEscape(org)+"/portal", nil, &out)
	return out.URL, err
}
