package console

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// orgOf reads the session's org and its plan from one snapshot. The org
// comes from the session only.
func (c *Console) orgOf(s *session) (*sites.Snapshot, *sites.Org, *sites.Plan, error) {
	snap := c.opts.Registry.Snapshot()
	o := snap.Orgs.Get(s.tenant.Org)
	if o == nil {
		return nil, nil, nil, &pageError{status: http.StatusNotFound, msg: "Your org does not exist any more."}
	}
	p := snap.Plans.Get(o.Plan)
	if p == nil {
		p = &sites.Plan{Name: o.Plan}
	}
	return snap, o, p, nil
}

// decisionView is the current decision in words.
type decisionView struct {
	Name, Label, Reason string
}

func decisionOf(d access.Decision, p *sites.Plan) decisionView {
	v := decisionView{Name: d.String(), Label: "Blocked"}
	switch d {
	case access.Allow:
		v.Label, v.Reason = "Allowed", "Your sites are served."
	case access.Throttle:
		v.Label = "Throttled"
		v.Reason = fmt.Sprintf("Your org is over its egress quota this month: its sites are served at %s/s.", humanBytes(p.ThrottleBPS))
	case access.BlockQuota:
		v.Reason = "Your org is past the hard limit of its egress quota: its sites answer 429 until next month or an upgrade."
	case access.BlockExpired:
		v.Reason = "A payment is overdue and the grace period is over: your sites answer 402 until it is paid."
	case access.BlockSuspended:
		v.Reason = "The operator suspended your org: your sites answer 403."
	case access.BlockStorage:
		v.Reason = "Your org has stored more than its plan allows for too long: its sites answer 429 until files are removed or the plan is upgraded."
	}
	return v
}

// limitRow is one limit of the plan against what the org uses.
type limitRow struct {
	Name, Used, Limit string
	Over              bool
}

func row(name string, used, limit int64, unit string) limitRow {
	r := limitRow{Name: name, Used: fmt.Sprint(used), Limit: "unlimited", Over: limit > 0 && used > limit}
	if unit == "bytes" {
		r.Used = humanBytes(used)
	}
	if limit > 0 {
		r.Limit = fmt.Sprint(limit)
		if unit == "bytes" {
			r.Limit = humanBytes(limit)
		}
	}
	return r
}

// overview: the org, its plan and state, the decision, the plan's limits
// against this month's usage, and what it owns beyond the plan.
func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) error {
	snap, o, p, err := c.orgOf(s)
	if err != nil {
		return err
	}
	data := map[string]any{"Org": o, "Plan": p}
	if c.opts.Accounts != nil {
		data["Decision"] = decisionOf(c.opts.Accounts.Gate(o.ID).Decision(), p)
		data["OverPlan"] = c.opts.Accounts.OverPlan(o.ID)
	}
	var rows []limitRow
	now := c.opts.Now().UTC()
	if c.opts.Usage != nil {
		from, to, _ := meter.PeriodBounds(meter.Period(now))
		hourly, err := c.opts.Usage.Hourly(r.Context(), o.ID, from, to)
		if err != nil {
			return err
		}
		_, totals, _ := meter.Aggregate(hourly, meter.StepMonth)
		rows = append(rows, row("Egress this month", totals.EgressBytes, p.EgressBytes, "bytes"))
	}
	if c.opts.Storage != nil {
		rows = append(rows, row("Storage", c.opts.Storage.OrgStorage(o.ID), p.StorageBytes, "bytes"))
	}
	rows = append(rows, row("Sites", int64(snap.SiteCount(o.ID)), int64(p.Sites), ""),
		row("Domains", int64(snap.DomainCount(o.ID)), int64(p.Domains), ""))
	data["Limits"] = rows
	data["Period"] = meter.Period(now)
	c.render(w, s, http.StatusOK, "overview", "Overview", data)
	return nil
}

// siteView is one of the org's sites with its domains.
type siteView struct {
	ID, Source string
	Active     *bool
	Domains    []*sites.Domain
}

func (c *Console) sitesPage(w http.ResponseWriter, r *http.Request, s *session) error {
	snap, o, _, err := c.orgOf(s)
	if err != nil {
		return err
	}
	var list []siteView
	for _, id := range snap.SitesOf(o.ID) {
		st := snap.Sites.Get(id)
		if st == nil {
			continue
		}
		v := siteView{ID: id, Source: st.Source.Type, Active: st.Active}
		for _, d := range snap.DomainsOf(id) {
			if dom := snap.Domains.Get(d); dom != nil {
				v.Domains = append(v.Domains, dom)
			}
		}
		list = append(list, v)
	}
	c.render(w, s, http.StatusOK, "sites", "Sites and domains", map[string]any{
		"Sites": list, "CanAdd": s.tenant.Has(ScopeWrite) && c.opts.Verifier != nil,
		"NoVerifier": c.opts.Verifier == nil})
	return nil
}

// events lists the org's account history, newest first.
func (c *Console) events(w http.ResponseWriter, r *http.Request, s *session) error {
	_, o, _, err := c.orgOf(s)
	if err != nil {
		return err
	}
	var evs []billing.Event
	if c.opts.Accounts != nil {
		if evs, err = c.opts.Accounts.Events(r.Context(), o.ID); err != nil {
			return err
		}
		slices.Reverse(evs)
	}
	c.render(w, s, http.StatusOK, "events", "Events", map[string]any{"Events": evs, "Configured": c.opts.Accounts != nil})
	return nil
}

// billingPage shows the plan, the plans ranked above it (one upgrade form
// each) and the manage-billing button.
func (c *Console) billingPage(w http.ResponseWriter, r *http.Request, s *session) error {
	snap, o, p, err := c.orgOf(s)
	if err != nil {
		return err
	}
	var higher []*sites.Plan
	for _, q := range snap.Plans.All() {
		if q.Rank > p.Rank {
			higher = append(higher, q)
		}
	}
	slices.SortFunc(higher, func(a, b *sites.Plan) int { return a.Rank - b.Rank })
	c.render(w, s, http.StatusOK, "billing", "Plan and billing", map[string]any{"Org": o, "Plan": p,
		"Higher": higher, "CanPay": s.tenant.Has(ScopeBilling), "Payments": c.opts.Payments != nil})
	return nil
}

func (c *Console) checkout(w http.ResponseWriter, r *http.Request, s *session) error {
	plan := r.PostFormValue("plan")
	if plan == "" {
		return &pageError{status: http.StatusBadRequest, msg: "Choose a plan."}
	}
	return c.payTo(w, r, s.tenant.Org, func() (string, error) { return c.opts.Payments.Checkout(r.Context(), s.tenant.Org, plan) })
}

func (c *Console) portal(w http.ResponseWriter, r *http.Request, s *session) error {
	return c.payTo(w, r, s.tenant.Org, func() (string, error) { return c.opts.Payments.Portal(r.Context(), s.tenant.Org) })
}

// payTo redirects (303) to the link link makes. A refusal (a plan not
// above the org's, no Stripe customer yet) is shown in its own words;
// any other failure as the payment provider's.
func (c *Console) payTo(w http.ResponseWriter, r *http.Request, org string, link func() (string, error)) error {
	if c.opts.Payments == nil {
		return &pageError{status: http.StatusNotFound, msg: "Online payment is not available here. Contact the operator to change your plan."}
	}
	u, err := link()
	switch {
	case errors.Is(err, sites.ErrConflict), errors.Is(err, sites.ErrInvalid), errors.Is(err, sites.ErrNotFound):
		return &pageError{status: http.StatusConflict, msg: "This cannot be done: " + err.Error() + "."}
	case err != nil:
		c.log.Error("console: payment link", "org", org, "err", err)
		return &pageError{status: http.StatusBadGateway, msg: "The payment provider could not be reached. Try again in a moment."}
	}
	http.Redirect(w, r, u, http.StatusSeeOther)
	return nil
}

// monthOf is the period a usage page shows: ?period=YYYY-MM, else the
// current month.
func (c *Console) monthOf(r *http.Request) (period string, from, to time.Time, err error) {
	period = r.URL.Query().Get("period")
	if period == "" {
		period = meter.Period(c.opts.Now())
	}
	from, to, err = meter.PeriodBounds(period)
	if err != nil {
		return "", from, to, &pageError{status: http.StatusBadRequest, msg: "The month must be written YYYY-MM."}
	}
	return period, from, to, nil
}
