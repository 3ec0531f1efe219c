package admin

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
)

// Request and response bodies of the /v1 routes that are not a bare registry
// record. The Client uses the same types.
type (
	// OrgCreate is the body of POST /v1/orgs. State defaults to "active", or,
	// with billing, to "trialing" with trial_ends_at when the plan has
	// trial_days; an explicit state other than "trialing" starts no trial.
	OrgCreate struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Plan  string `json:"plan"`
		State string `json:"state,omitempty"`
	}
	// SiteCreate is the body of POST /v1/orgs/{id}/sites.
	SiteCreate struct {
		ID     string       `json:"id"`
		Source sites.Source `json:"source"`
		HSTS   *sites.HSTS  `json:"hsts,omitempty"`
	}
	// DomainAttach is the body of POST /v1/sites/{id}/domains.
	DomainAttach struct {
		Domain string `json:"domain"`
	}
	// OrgDetail is GET /v1/orgs/{id}: the org and the ids of its sites.
	OrgDetail struct {
		sites.Org
		Sites []string `json:"sites"`
		// StorageBytes is what all the org's sites store (pages included),
		// as last measured; 0 when metering is off.
		StorageBytes int64 `json:"storage_bytes"`
		// OverPlan lists the sites and domains the org owns beyond its
		// plan, and from when they are not served; absent when none.
		OverPlan *billing.OverPlan `json:"over_plan,omitempty"`
		// Limits is the org's plan: its limits; absent when the plan is
		// not in the registry.
		Limits *sites.Plan `json:"limits,omitempty"`
	}
	// SitePatch is the body of PATCH /v1/sites/{id}: "active": true keeps
	// the site first when its org owns more sites than its plan allows,
	// false deactivates it (never served), null unmarks it.
	SitePatch struct {
		Active json.RawMessage `json:"active"`
	}
	// SiteDetail is GET /v1/sites/{id}: the site and the names of its domains.
	SiteDetail struct {
		sites.Site
		Domains []string `json:"domains"`
		// StorageBytes is what the site stores, as last measured.
		StorageBytes int64 `json:"storage_bytes"`
		// PublishBlocked is the head commit of a Gitea site that is not
		// published (over the org's storage quota), as this node decided;
		// absent once the site publishes a commit.
		PublishBlocked *billing.PublishBlock `json:"publish_blocked,omitempty"`
	}
	// PlanList is GET /v1/plans, sorted by name: every plan for the
	// operator, the public ones (the catalog) for anyone else.
	PlanList struct {
		Plans []sites.Plan `json:"plans"`
	}
	// OrgUpdate is the body of PATCH /v1/orgs/{id}: the fields to change
	// and Force, which lets a plan change move the org down the plan ladder
	// (to a plan of equal or lower rank); without it such a change is
	// refused with 409, problem type urn:tollgate:problem:plan-downgrade.
	OrgUpdate struct {
		sites.OrgPatch
		Force bool `json:"force,omitempty"`
	}
	// OrgList is GET /v1/orgs, sorted by id.
	OrgList struct {
		Orgs []sites.Org `json:"orgs"`
	}
)

func (s *Server) listPlans(w http.ResponseWriter, r *http.Request) error {
	snap := s.reg.Snapshot()
	out := PlanList{Plans: []sites.Plan{}}
	operator := callerOf(r) != nil && callerOf(r).operator
	for _, p := range snap.Plans.All() {
		if operator || p.Public {
			out.Plans = append(out.Plans, *p)
		}
	}
	slices.SortFunc(out.Plans, func(a, b sites.Plan) int { return cmp.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getPlan answers a plan the caller may see (planVisible); another is
// answered as one that does not exist.
func (s *Server) getPlan(w http.ResponseWriter, r *http.Request) error {
	p, err := s.reg.Plan(r.PathValue("name"))
	if err == nil && !s.planVisible(r, &p) {
		err = fmt.Errorf("plan %q: %w", p.Name, sites.ErrNotFound)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// putPlan creates or replaces a plan. The name in the body may be left out; if
// present it must be the one in the path.
func (s *Server) putPlan(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var p sites.Plan
	if err := s.decode(w, r, &p); err != nil {
		return err
	}
	if p.Name == "" {
		p.Name = name
	}
	if p.Name != name {
		return badRequest("name: %q in the body differs from %q in the path", p.Name, name)
	}
	created, err := s.reg.PutPlan(r.Context(), p)
	if err != nil {
		return err
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
		w.Header().Set("Location", "/v1/plans/"+url.PathEscape(p.Name))
	}
	writeJSON(w, code, p)
	return nil
}

func (s *Server) listOrgs(w http.ResponseWriter, _ *http.Request) error {
	snap := s.reg.Snapshot()
	out := OrgList{Orgs: make([]sites.Org, 0, snap.Orgs.Len())}
	for _, o := range snap.Orgs.All() {
		out.Orgs = append(out.Orgs, *o)
	}
	slices.SortFunc(out.Orgs, func(a, b sites.Org) int { return cmp.Compare(a.ID, b.ID) })
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createOrg(w http.ResponseWriter, r *http.Request) error {
	var in OrgCreate
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	org := sites.Org{ID: in.ID, Name: in.Name, Plan: in.Plan, State: in.State}
	var o sites.Org
	var err error
	if s.accounts != nil {
		o, err = s.accounts.CreateOrg(r.Context(), org) // trials, recorded
	} else {
		o, err = s.reg.CreateOrg(r.Context(), org)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/orgs/"+url.PathEscape(o.ID))
	writeJSON(w, http.StatusCreated, o)
	return nil
}

// getOrg reads the org and its sites from one snapshot, so they agree.
func (s *Server) getOrg(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	snap := s.reg.Snapshot()
	o := snap.Orgs.Get(id)
	if o == nil {
		return fmt.Errorf("org %q: %w", id, sites.ErrNotFound)
	}
	d := OrgDetail{Org: *o, Sites: nonNil(snap.SitesOf(id))}
	if s.storage != nil {
		d.StorageBytes = s.storage.OrgStorage(id)
	}
	if s.accounts != nil {
		d.OverPlan = s.accounts.OverPlan(id)
	}
	if p := snap.Plans.Get(o.Plan); p != nil {
		d.Limits = p
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) updateOrg(w http.ResponseWriter, r *http.Request) error {
	var in OrgUpdate
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	id := r.PathValue("id")
	if s.reg.Snapshot().Orgs.Get(id) == nil {
		return fmt.Errorf("org %q: %w", id, sites.ErrNotFound)
	}
	if err := s.applyAccount(r.Context(), id, &in.OrgPatch, in.Force); err != nil {
		return err
	}
	o, err := s.reg.UpdateOrg(r.Context(), id, in.OrgPatch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

// deleteOrg deletes the org, then its tokens.
func (s *Server) deleteOrg(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.DeleteOrg(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	if err := s.revokeOrgTokens(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// createSite adds a site; a tenant's only from the sources tenantSource
// allows.
func (s *Server) createSite(w http.ResponseWriter, r *http.Request) error {
	var in SiteCreate
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if tenantOf(r) != nil {
		if err := tenantSource(in.Source, r.PathValue("id"), s.reg.Snapshot()); err != nil {
			return err
		}
	}
	site, err := s.reg.CreateSite(r.Context(), sites.Site{ID: in.ID, Org: r.PathValue("id"), Source: in.Source, HSTS: in.HSTS})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/sites/"+url.PathEscape(site.ID))
	writeJSON(w, http.StatusCreated, site)
	return nil
}

// getSite reads the site and its domains from one snapshot, so they agree.
func (s *Server) getSite(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	snap := s.reg.Snapshot()
	site := snap.Sites.Get(id)
	if site == nil {
		return fmt.Errorf("site %q: %w", id, sites.ErrNotFound)
	}
	d := SiteDetail{Site: *site, Domains: nonNil(snap.DomainsOf(id))}
	if s.storage != nil {
		d.StorageBytes = s.storage.Storage(site.Org, site.ID)
	}
	if s.publishing != nil {
		if b, ok := s.publishing.PublishBlocked(site.ID); ok {
			d.PublishBlocked = &b
		}
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) updateSite(w http.ResponseWriter, r *http.Request) error {
	var in SitePatch
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	if in.Active == nil {
		return badRequest("nothing to change: send \"active\": true, false or null")
	}
	var active *bool
	if err := json.Unmarshal(in.Active, &active); err != nil {
		return badRequest("active: must be true, false or null")
	}
	site, err := s.reg.SetSiteActive(r.Context(), r.PathValue("id"), active)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, site)
	return nil
}

func (s *Server) deleteSite(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.DeleteSite(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// attachDomain attaches a domain: verified when the operator asks (trusted),
// pending when a tenant does, with the DNS records that will prove it.
func (s *Server) attachDomain(w http.ResponseWriter, r *http.Request) error {
	var in DomainAttach
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	via := sites.ViaOperator
	if tenantOf(r) != nil {
		via = sites.ViaTenant
	}
	d, err := s.reg.AttachDomainVia(r.Context(), r.PathValue("id"), in.Domain, via)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/domains/"+url.PathEscape(d.Name))
	writeJSON(w, http.StatusCreated, domainDetail(d))
	return nil
}

// getDomain answers the domain and its DNS records; a pending one is
// checked against DNS first (prove).
func (s *Server) getDomain(w http.ResponseWriter, r *http.Request) error {
	d, err := s.reg.Domain(r.PathValue("domain"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, domainDetail(s.prove(r.Context(), d)))
	return nil
}

func (s *Server) detachDomain(w http.ResponseWriter, r *http.Request) error {
	if err := s.reg.DetachDomain(r.Context(), r.PathValue("domain")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
