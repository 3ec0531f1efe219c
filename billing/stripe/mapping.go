package stripe

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
)

// stripeObject holds the few fields of data.object that are read, for any
// of the handled event types.
type stripeObject struct {
	ID                string            `json:"id"`
	Customer          stripeID          `json:"customer"`
	ClientReferenceID string            `json:"client_reference_id"`
	Status            string            `json:"status"`
	Metadata          map[string]string `json:"metadata"`
	// The subscription's paid period (unix seconds); from API version
	// 2025-03-31 on they are on its items instead.
	CurrentPeriodStart int64 `json:"current_period_start"`
	CurrentPeriodEnd   int64 `json:"current_period_end"`
	Items              struct {
		Data []struct {
			CurrentPeriodStart int64 `json:"current_period_start"`
			CurrentPeriodEnd   int64 `json:"current_period_end"`
			Price              *struct {
				ID        string            `json:"id"`
				LookupKey string            `json:"lookup_key"`
				Metadata  map[string]string `json:"metadata"`
			} `json:"price"`
		} `json:"data"`
	} `json:"items"`
}

// stripeID is an expandable reference: an id, null, or an object with an id.
type stripeID string

func (id *stripeID) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		*id = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var v string
		err := json.Unmarshal(b, &v)
		*id = stripeID(v)
		return err
	}
	var v struct {
		ID string `json:"id"`
	}
	err := json.Unmarshal(b, &v)
	*id = stripeID(v.ID)
	return err
}

// Metadata keys set on Stripe objects by the operator's checkout.
const (
	metaOrg  = "tollgate_org"  // on a subscription: the org it pays for
	metaPlan = "tollgate_plan" // on a price without lookup_key: the plan it buys
)

// skipUnhandled is the reason an event of another type is ignored.
const skipUnhandled = "event type not handled"

// change maps an event to the org and Change it asks for; skip is the
// reason when there is nothing to do.
func (s *Stripe) change(ev *stripego.Event) (org string, c billing.Change, skip string, werr *webhookError) {
	c = billing.Change{Actor: billing.ActorStripe, Ref: ev.ID, StripeEventAt: time.Unix(ev.Created, 0).UTC()}
	typ := string(ev.Type)
	switch typ {
	case "checkout.session.completed", "customer.subscription.created", "customer.subscription.updated",
		"customer.subscription.deleted", "invoice.paid", "invoice.payment_failed":
	default:
		return "", c, skipUnhandled, nil
	}
	var obj stripeObject
	if err := json.Unmarshal(ev.Data.Raw, &obj); err != nil {
		return "", c, "", &webhookError{http.StatusBadRequest, outcomeBadRequest, "data.object: " + err.Error()}
	}
	switch typ {
	case "checkout.session.completed":
		return s.checkoutChange(&obj, c)
	case "invoice.paid", "invoice.payment_failed":
		return s.invoiceChange(typ, &obj, c)
	}
	org, c, skip, werr = s.subscriptionChange(typ, &obj, c)
	if c.Tenant {
		c.PeriodEnd = paidPeriodEnd(&obj, ev.Data.PreviousAttributes)
	}
	return org, c, skip, werr
}

// paidPeriodEnd is the end of the period the tenant paid for on the plan
// it leaves: the subscription's current_period_end (its first item's in API
// versions without it), or, when the event is the renewal itself
// (previous_attributes has the old current_period_end: a change scheduled
// for the period's end, as the customer portal does when downgrades wait),
// the new period's start, which is past. Zero when the event has neither.
func paidPeriodEnd(obj *stripeObject, previous map[string]any) time.Time {
	start, end := obj.CurrentPeriodStart, obj.CurrentPeriodEnd
	if end == 0 && len(obj.Items.Data) > 0 {
		start, end = obj.Items.Data[0].CurrentPeriodStart, obj.Items.Data[0].CurrentPeriodEnd
	}
	if _, renewed := previous["current_period_end"]; renewed && start > 0 {
		return time.Unix(start, 0).UTC()
	}
	if end == 0 {
		return time.Time{}
	}
	return time.Unix(end, 0).UTC()
}

// checkoutChange links the session's customer to the org named by its
// client_reference_id.
func (s *Stripe) checkoutChange(obj *stripeObject, c billing.Change) (string, billing.Change, string, *webhookError) {
	org, customer := obj.ClientReferenceID, string(obj.Customer)
	switch {
	case org == "":
		return "", c, "checkout session without client_reference_id (not started for an org)", nil
	case !s.acc.OrgExists(org):
		return org, c, "", unprocessable(outcomeUnknownOrg, "checkout session %s: client_reference_id %q is not an org", obj.ID, org)
	case customer == "":
		return org, c, "checkout session without customer", nil
	}
	// Linking is not ordered: the subscription's events are often
	// created a second before the session completes and, while the
	// customer was unknown, retried after it; ordered by this event
	// they would all be stale and the plan never applied.
	c.StripeCustomer, c.Cause, c.StripeEventAt = customer, "checkout completed", time.Time{}
	return org, c, "", nil
}

// invoiceChange makes the customer's org active (paid) or past_due.
func (s *Stripe) invoiceChange(typ string, obj *stripeObject, c billing.Change) (string, billing.Change, string, *webhookError) {
	org, ok := s.orgByCustomer(string(obj.Customer))
	if !ok {
		return "", c, "", unprocessable(outcomeUnknownOrg, "invoice %s: customer %q is linked to no org", obj.ID, string(obj.Customer))
	}
	if typ == "invoice.paid" {
		c.State, c.Cause = sites.StateActive, "invoice paid"
	} else {
		c.State, c.Cause = sites.StatePastDue, "payment failed"
	}
	return org, c, "", nil
}

// subscriptionChange maps a subscription's status and first price to a
// state and a plan (the default plan once cancelled).
func (s *Stripe) subscriptionChange(typ string, obj *stripeObject, c billing.Change) (string, billing.Change, string, *webhookError) {
	customer := string(obj.Customer)
	cancelled := typ == "customer.subscription.deleted"
	if !cancelled {
		switch obj.Status {
		case "active":
			c.State = sites.StateActive
		case "trialing":
			c.State = sites.StateTrialing
		case "past_due", "unpaid":
			c.State = sites.StatePastDue
		case "canceled", "incomplete_expired":
			cancelled = true
		case "incomplete":
			return "", c, fmt.Sprintf("subscription %s is incomplete (first payment pending): no change until it is active", obj.ID), nil
		default:
			return "", c, fmt.Sprintf("subscription %s: status %q is not mapped", obj.ID, obj.Status), nil
		}
	}
	org, ok := s.orgByCustomer(customer)
	if !ok {
		org = obj.Metadata[metaOrg]
		if org == "" || !s.acc.OrgExists(org) {
			return org, c, "", unprocessable(outcomeUnknownOrg,
				"subscription %s: customer %q is linked to no org and metadata %s names none (%q)", obj.ID, customer, metaOrg, org)
		}
		c.StripeCustomer = customer // link it
	}
	if cancelled {
		c.State, c.Plan, c.Cause = sites.StateActive, s.acc.DefaultPlan(), "subscription cancelled"
		return org, c, "", nil
	}
	plan, werr := s.subscriptionPlan(obj)
	if werr != nil {
		return org, c, "", werr
	}
	c.Plan, c.Tenant = plan, true
	c.Cause = fmt.Sprintf("subscription %s (%s)", strings.TrimPrefix(typ, "customer.subscription."), obj.Status)
	return org, c, "", nil
}

// orgByCustomer is Accounts.OrgByCustomer, except that no customer is no
// org (rather than any org without a customer).
func (s *Stripe) orgByCustomer(customer string) (string, bool) {
	if customer == "" {
		return "", false
	}
	return s.acc.OrgByCustomer(customer)
}

// subscriptionPlan is the plan the subscription's first price buys.
func (s *Stripe) subscriptionPlan(obj *stripeObject) (string, *webhookError) {
	if len(obj.Items.Data) == 0 || obj.Items.Data[0].Price == nil {
		return "", unprocessable(outcomeUnknownPlan, "subscription %s has no price", obj.ID)
	}
	price := obj.Items.Data[0].Price
	plan := price.LookupKey
	if plan == "" {
		plan = price.Metadata[metaPlan]
	}
	switch {
	case plan == "":
		return "", unprocessable(outcomeUnknownPlan, "price %s has neither a lookup_key nor metadata %s naming a plan", price.ID, metaPlan)
	case !s.acc.PlanExists(plan):
		return "", unprocessable(outcomeUnknownPlan, "price %s names plan %q, which does not exist; create it and Stripe's next retry applies the change", price.ID, plan)
	}
	return plan, nil
}
