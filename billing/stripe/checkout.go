package stripe

import (
	"context"
	"errors"
	"fmt"

	stripego "github.com/stripe/stripe-go/v76"
	portalsession "github.com/stripe/stripe-go/v76/billingportal/session"
	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
	stripeprice "github.com/stripe/stripe-go/v76/price"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
)

// Links a tenant follows to pay: a Stripe Checkout session to subscribe to
// a higher plan, and a customer-portal session to manage what it pays
// (payment methods, invoices, cancellation at the period's end, plan
// changes, which come back as subscription events and follow the plan
// ladder).
//
// Checkout is for an org that has no paid subscription yet: no Stripe
// customer, or one on [billing] default_plan (a cancelled subscription). An
// org that pays already changes its plan in the portal, where Stripe
// prorates; a second Checkout would start a second subscription. The plan
// bought is the price whose lookup_key is the plan's name (the same rule
// as the webhook's), and only a plan of a higher rank than the current one
// is offered: the ladder's downgrades wait for the period's end, which only
// a subscription change can express.

// Plans is what the links need of orgs and plans. *billing.Billing
// implements it.
type Plans interface {
	// PlanOf returns an org's plan and Stripe customer; ok is false when
	// there is no such org.
	PlanOf(org string) (plan, customer string, ok bool)
	// Rank returns a plan's rank; ok is false when there is no such plan.
	Rank(plan string) (rank int, ok bool)
	// DefaultPlan is [billing] default_plan.
	DefaultPlan() string
}

// Errors of Checkout and Portal.
var (
	// ErrNotConfigured: the Stripe secret key or the return URLs are not
	// set.
	ErrNotConfigured = errors.New("checkout and portal links are not configured")
	// ErrSubscribed: the org pays already; its plan changes in the portal.
	ErrSubscribed = fmt.Errorf("the org pays through Stripe already: change its plan in the customer portal (POST /v1/orgs/{id}/portal): %w", sites.ErrConflict)
	// ErrUpstream: Stripe's API could not be asked or refused the session.
	ErrUpstream = errors.New("stripe unavailable")
	// ErrNoCustomer: the org has no Stripe customer to open a portal for.
	ErrNoCustomer = fmt.Errorf("the org has no Stripe customer yet: subscribe through checkout first: %w", sites.ErrConflict)
)

// links holds the API clients of Checkout and the portal; nil without a
// secret key.
type links struct {
	plans    Plans
	prices   *stripeprice.Client
	checkout *checkoutsession.Client
	portal   *portalsession.Client
}

func newLinks(plans Plans, b stripego.Backend, key string) *links {
	if plans == nil || key == "" {
		return nil
	}
	return &links{plans: plans, prices: &stripeprice.Client{B: b, Key: key},
		checkout: &checkoutsession.Client{B: b, Key: key}, portal: &portalsession.Client{B: b, Key: key}}
}

// Checkout returns the URL of a Stripe Checkout session in which org
// subscribes to plan (promotion codes allowed). The plan must rank above
// the org's current plan (billing.ErrDowngrade otherwise).
func (s *Stripe) Checkout(ctx context.Context, org, plan string) (string, error) {
	if s.links == nil || s.cfg.CheckoutSuccessURL == "" || s.cfg.CheckoutCancelURL == "" {
		return "", fmt.Errorf("%w: [billing.stripe] secret_key, checkout_success_url and checkout_cancel_url", ErrNotConfigured)
	}
	current, customer, ok := s.links.plans.PlanOf(org)
	if !ok {
		return "", fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	to, ok := s.links.plans.Rank(plan)
	if !ok {
		return "", fmt.Errorf("%w: plan %q does not exist", sites.ErrInvalid, plan)
	}
	if from, _ := s.links.plans.Rank(current); to <= from {
		return "", fmt.Errorf("%w: %s (rank %d) is not above the org's plan %s (rank %d)", billing.ErrDowngrade, plan, to, current, from)
	}
	if customer != "" && current != s.links.plans.DefaultPlan() {
		return "", ErrSubscribed
	}
	priceID, err := s.priceOf(ctx, plan)
	if err != nil {
		return "", err
	}
	return s.newCheckout(ctx, org, customer, &stripego.CheckoutSessionParams{
		Mode:                stripego.String(string(stripego.CheckoutSessionModeSubscription)),
		LineItems:           []*stripego.CheckoutSessionLineItemParams{{Price: stripego.String(priceID), Quantity: stripego.Int64(1)}},
		AllowPromotionCodes: stripego.Bool(true),
	})
}

// newCheckout opens the Checkout session params describe (mode, line
// items) with what every tollgate session carries: the org as
// client_reference_id, its Stripe customer when it has one, and the return
// URLs of [billing.stripe]. It returns the session's URL; a session Stripe
// refuses as invalid (an amount above its limit) is sites.ErrInvalid with
// Stripe's reason (upstream).
func (s *Stripe) newCheckout(ctx context.Context, org, customer string, params *stripego.CheckoutSessionParams) (string, error) {
	params.ClientReferenceID = stripego.String(org)
	params.SuccessURL = stripego.String(billing.OrgURL(s.cfg.CheckoutSuccessURL, org))
	params.CancelURL = stripego.String(billing.OrgURL(s.cfg.CheckoutCancelURL, org))
	if customer != "" {
		params.Customer = stripego.String(customer)
	}
	params.Context = ctx
	sess, err := s.links.checkout.New(params)
	if err != nil {
		return "", upstream(err, "checkout session")
	}
	return sess.URL, nil
}

// Portal returns the URL of a customer-portal session for org's Stripe
// customer.
func (s *Stripe) Portal(ctx context.Context, org string) (string, error) {
	if s.links == nil || s.cfg.PortalReturnURL == "" {
		return "", fmt.Errorf("%w: [billing.stripe] secret_key and portal_return_url", ErrNotConfigured)
	}
	_, customer, ok := s.links.plans.PlanOf(org)
	if !ok {
		return "", fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	if customer == "" {
		return "", ErrNoCustomer
	}
	params := &stripego.BillingPortalSessionParams{Customer: stripego.String(customer),
		ReturnURL: stripego.String(billing.OrgURL(s.cfg.PortalReturnURL, org))}
	params.Context = ctx
	sess, err := s.links.portal.New(params)
	if err != nil {
		return "", fmt.Errorf("%w: portal session: %w", ErrUpstream, err)
	}
	return sess.URL, nil
}

// priceOf finds the active price whose lookup_key is plan.
func (s *Stripe) priceOf(ctx context.Context, plan string) (string, error) {
	params := &stripego.PriceListParams{LookupKeys: stripego.StringSlice([]string{plan}), Active: stripego.Bool(true)}
	params.Context = ctx
	params.Limit = stripego.Int64(1)
	it := s.links.prices.List(params)
	for it.Next() {
		return it.Price().ID, nil
	}
	if err := it.Err(); err != nil {
		return "", fmt.Errorf("%w: prices of plan %s: %w", ErrUpstream, plan, err)
	}
	return "", fmt.Errorf("%w: no active Stripe price has lookup_key %q", sites.ErrInvalid, plan)
}

var _ Plans = (*billing.Billing)(nil)
