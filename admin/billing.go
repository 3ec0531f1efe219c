package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
)

// Accounts creates orgs and changes their accounts through the billing
// lifecycle (recorded, with hooks, trials and the plan ladder) and lists
// their history. *billing.Billing implements it.
type Accounts interface {
	CreateOrg(ctx context.Context, o sites.Org) (sites.Org, error)
	Apply(ctx context.Context, org string, c billing.Change) (sites.Org, error)
	Events(ctx context.Context, org string) ([]billing.Event, error)
	// OverPlan is what the org owns beyond its plan; nil when nothing.
	OverPlan(org string) *billing.OverPlan
}

// PublishStatus tells which head commit of a site is not published.
// *billing.PublishGuard implements it.
type PublishStatus interface {
	PublishBlocked(site string) (billing.PublishBlock, bool)
}

// OrgEvents is the body of GET /v1/orgs/{id}/events.
type OrgEvents struct {
	Events []billing.Event `json:"events"`
}

func (s *Server) orgEvents(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if s.reg.Snapshot().Orgs.Get(id) == nil {
		return fmt.Errorf("org %q: %w", id, sites.ErrNotFound)
	}
	if s.accounts == nil {
		return fmt.Errorf("%w: billing is not configured", errNotConfig)
	}
	evs, err := s.accounts.Events(r.Context(), id)
	if err != nil {
		return err
	}
	if evs == nil {
		evs = []billing.Event{}
	}
	writeJSON(w, http.StatusOK, OrgEvents{Events: evs})
	return nil
}

// applyAccount sends the account fields of a PATCH (state, plan, Stripe
// customer) through billing, so each change is recorded with the operator as
// its actor; it clears them from patch. force lets the plan move down the
// ladder.
func (s *Server) applyAccount(ctx context.Context, id string, patch *sites.OrgPatch, force bool) error {
	if s.accounts == nil && patch.TrialEndsAt != nil {
		return fmt.Errorf("%w: trial_ends_at needs billing", errNotConfig)
	}
	if s.accounts == nil || (patch.State == nil && patch.Plan == nil && patch.StripeCustomer == nil && patch.TrialEndsAt == nil) {
		return nil
	}
	var c billing.Change
	if patch.TrialEndsAt != nil {
		if patch.TrialEndsAt.IsZero() {
			return fmt.Errorf("%w: trial_ends_at: a time is required", sites.ErrInvalid)
		}
		c.TrialEndsAt, patch.TrialEndsAt = *patch.TrialEndsAt, nil
	}
	if patch.State != nil {
		c.State = *patch.State
		if c.State == "" || !sites.ValidState(c.State) {
			return fmt.Errorf("%w: state: %q must be one of trialing, active, past_due, expired, suspended", sites.ErrInvalid, c.State)
		}
	}
	if patch.Plan != nil {
		c.Plan = *patch.Plan
		if c.Plan == "" {
			return fmt.Errorf("%w: plan: required", sites.ErrInvalid)
		}
	}
	if patch.StripeCustomer != nil && *patch.StripeCustomer != "" {
		c.StripeCustomer = *patch.StripeCustomer
		patch.StripeCustomer = nil
	} // unlinking ("") is left to the registry
	patch.State, patch.Plan = nil, nil
	if c == (billing.Change{}) {
		return nil
	}
	c.Cause, c.Actor, c.Force = "admin API", billing.ActorOperator, force
	_, err := s.accounts.Apply(ctx, id, c)
	return err
}

// OrgEvents lists an org's account history.
func (c *Client) OrgEvents(ctx context.Context, org string) ([]billing.Event, error) {
	var out OrgEvents
	_, err := c.do(ctx, http.MethodGet, "/v1/orgs/"+url.PathEscape(org)+"/events", nil, &out)
	return out.Events, err
}

func orgEventsCmd(ctx context.Context, c *Client, args []string) (output, error) {
	evs, err := c.OrgEvents(ctx, args[0])
	o := output{value: evs, header: []string{"AT", "FIELD", "FROM", "TO", "ACTOR", "CAUSE"}}
	for _, e := range evs {
		o.rows = append(o.rows, []string{e.At.UTC().Format(time.RFC3339), e.Field, orDash(e.From), orDash(e.To), e.Actor, orDash(e.Cause)})
	}
	return o, err
}
