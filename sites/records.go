package sites

// The registry's reads and writes of single records.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tollgate-edge/tollgate/internal/cowmap"
)

// PutPlan creates or replaces a plan. It reports whether the plan is new.
func (r *Registry) PutPlan(ctx context.Context, p Plan) (created bool, err error) {
	if err := p.Validate(); err != nil {
		return false, invalid(err)
	}
	err = r.update(ctx, func(next *tx) ([]Change, error) {
		created = next.Plans.Get(p.Name) == nil
		next.putPlan(&p)
		return []Change{putOp(bucketPlans, p.Name, &p)}, nil
	})
	return created, err
}

// Plan returns a plan by name.
func (r *Registry) Plan(name string) (Plan, error) {
	return lookup(r.Snapshot().Plans, "plan", name)
}

// CreateOrg adds an org. State defaults to active; the plan must exist.
func (r *Registry) CreateOrg(ctx context.Context, o Org) (Org, error) {
	return r.CreateOrgWith(ctx, o, nil)
}

// CreateOrgWith is CreateOrg that also writes what extra returns for the
// org as created (its account history, say) in the same write: one commit,
// all or nothing. extra may be nil.
func (r *Registry) CreateOrgWith(ctx context.Context, o Org, extra func(created Org) []Change) (Org, error) {
	if o.State == "" {
		o.State = StateActive
	}
	if err := o.Validate(); err != nil {
		return Org{}, invalid(err)
	}
	o.CreatedAt = At(r.now())
	err := r.update(ctx, func(next *tx) ([]Change, error) {
		if next.Orgs.Get(o.ID) != nil {
			return nil, fmt.Errorf("org %q already exists: %w", o.ID, ErrConflict)
		}
		if next.Plans.Get(o.Plan) == nil {
			return nil, invalid(fmt.Errorf("plan: %q does not exist", o.Plan))
		}
		for _, owner := range o.GiteaOwners {
			if other := next.owners.Get(owner); other != "" {
				return nil, fmt.Errorf("gitea owner %q already belongs to org %q: %w", owner, other, ErrConflict)
			}
		}
		next.putOrg(&o)
		ops := []Change{putOp(bucketOrgs, o.ID, &o)}
		if extra != nil {
			ops = append(ops, extra(o)...)
		}
		return ops, nil
	})
	return o, err
}

// EnsureGiteaOrg makes sure an org pays for owner's pages: the org that
// claimed the owner, or else a synthetic "gitea-{owner}" org on plan, created
// now. It is called on an owner's first request, off the request path.
func (r *Registry) EnsureGiteaOrg(ctx context.Context, owner, plan string) error {
	id := r.Snapshot().OrgForGiteaOwner(owner)
	if r.Snapshot().Orgs.Get(id) != nil {
		return nil
	}
	_, err := r.CreateOrg(ctx, Org{ID: id, Name: owner, Plan: plan})
	if errors.Is(err, ErrConflict) {
		return nil // created meanwhile
	}
	return err
}

// Org returns an org by id.
func (r *Registry) Org(id string) (Org, error) {
	return lookup(r.Snapshot().Orgs, "org", id)
}

// OrgPatch lists the org fields an update may change; nil leaves a field as is.
type OrgPatch struct {
	Name  *string `json:"name"`
	Plan  *string `json:"plan"`
	State *string `json:"state"`
	// GiteaOwners replaces the org's list; usage of those owners' pages is
	// attributed to this org from then on.
	GiteaOwners *[]string `json:"gitea_owners"`
	// StripeCustomer links the org to a Stripe customer ("" unlinks).
	StripeCustomer *string `json:"stripe_customer"`
	// TrialEndsAt moves the end of a trialing org's trial; it goes through
	// billing (the admin API), the registry itself leaves it alone.
	TrialEndsAt *time.Time `json:"trial_ends_at"`
}

// UpdateOrg applies patch to the org.
func (r *Registry) UpdateOrg(ctx context.Context, id string, patch OrgPatch) (Org, error) {
	var out Org
	err := r.update(ctx, func(next *tx) ([]Change, error) {
		cur := next.Orgs.Get(id)
		if cur == nil {
			return nil, fmt.Errorf("org %q: %w", id, ErrNotFound)
		}
		o := *cur
		if patch.Name != nil {
			o.Name = *patch.Name
		}
		if patch.Plan != nil {
			o.Plan = *patch.Plan
		}
		if patch.State != nil {
			o.State = *patch.State
		}
		if patch.StripeCustomer != nil {
			o.StripeCustomer = *patch.StripeCustomer
		}
		if patch.GiteaOwners != nil {
			o.GiteaOwners = slices.Clone(*patch.GiteaOwners)
			slices.Sort(o.GiteaOwners)
			o.GiteaOwners = slices.Compact(o.GiteaOwners)
		}
		if err := o.Validate(); err != nil {
			return nil, invalid(err)
		}
		for _, owner := range o.GiteaOwners {
			if other := next.owners.Get(owner); other != "" && other != id {
				return nil, fmt.Errorf("gitea owner %q already belongs to org %q: %w", owner, other, ErrConflict)
			}
		}
		if next.Plans.Get(o.Plan) == nil {
			return nil, invalid(fmt.Errorf("plan: %q does not exist", o.Plan))
		}
		next.putOrg(&o)
		out = o
		return []Change{putOp(bucketOrgs, id, &o)}, nil
	})
	return out, err
}

// ModifyOrg changes org id with fn, which edits a copy and may return more
// operations to persist in the same transaction (billing's event records).
// fn runs under the registry's write lock: it must be quick and must not call
// the registry. The result is validated like UpdateOrg's.
func (r *Registry) ModifyOrg(ctx context.Context, id string, fn func(o *Org, s *Snapshot) ([]Change, error)) (Org, error) {
	var out Org
	err := r.update(ctx, func(next *tx) ([]Change, error) {
		cur := next.Orgs.Get(id)
		if cur == nil {
			return nil, fmt.Errorf("org %q: %w", id, ErrNotFound)
		}
		o := *cur
		o.GiteaOwners = slices.Clone(cur.GiteaOwners)
		extra, err := fn(&o, r.snap.Load())
		if err != nil {
			return nil, err
		}
		if err := o.Validate(); err != nil {
			return nil, invalid(err)
		}
		if next.Plans.Get(o.Plan) == nil {
			return nil, invalid(fmt.Errorf("plan: %q does not exist", o.Plan))
		}
		next.putOrg(&o)
		out = o
		return append([]Change{putOp(bucketOrgs, id, &o)}, extra...), nil
	})
	return out, err
}

// DeleteOrg removes an org that owns no sites.
func (r *Registry) DeleteOrg(ctx context.Context, id string) error {
	return r.update(ctx, func(next *tx) ([]Change, error) {
		if next.Orgs.Get(id) == nil {
			return nil, fmt.Errorf("org %q: %w", id, ErrNotFound)
		}
		if n := next.sitesByOrg.Get(id).Len(); n > 0 {
			return nil, fmt.Errorf("org %q still owns %d site(s); delete them first: %w", id, n, ErrConflict)
		}
		next.deleteOrg(id)
		return []Change{deleteOp(bucketOrgs, id)}, nil
	})
}

// CreateSite adds a site to an org, within its plan's site limit.
func (r *Registry) CreateSite(ctx context.Context, s Site) (Site, error) {
	if err := s.Validate(); err != nil {
		return Site{}, invalid(err)
	}
	s.CreatedAt = At(r.now())
	err := r.update(ctx, func(next *tx) ([]Change, error) {
		org := next.Orgs.Get(s.Org)
		if org == nil {
			return nil, fmt.Errorf("org %q: %w", s.Org, ErrNotFound)
		}
		if next.Sites.Get(s.ID) != nil {
			return nil, fmt.Errorf("site %q already exists: %w", s.ID, ErrConflict)
		}
		if err := next.siteLimit(org); err != nil {
			return nil, err
		}
		next.putSite(&s)
		return []Change{putOp(bucketSites, s.ID, &s)}, nil
	})
	return s, err
}

// Site returns a site by id.
func (r *Registry) Site(id string) (Site, error) {
	return lookup(r.Snapshot().Sites, "site", id)
}

// DeleteSite removes a site and detaches its domains.
func (r *Registry) DeleteSite(ctx context.Context, id string) error {
	return r.update(ctx, func(next *tx) ([]Change, error) {
		if next.Sites.Get(id) == nil {
			return nil, fmt.Errorf("site %q: %w", id, ErrNotFound)
		}
		ops := []Change{deleteOp(bucketSites, id)}
		for name := range next.domainsBySite.Get(id).All() {
			next.deleteDomain(name)
			ops = append(ops, deleteOp(bucketDomains, name))
		}
		next.deleteSite(id)
		return ops, nil
	})
}

// SetSiteActive marks a site active (true: kept first when its org owns
// more sites than its plan allows), inactive (false: never served) or, with
// nil, unmarked. See Site.Active.
func (r *Registry) SetSiteActive(ctx context.Context, id string, active *bool) (Site, error) {
	var out Site
	err := r.update(ctx, func(next *tx) ([]Change, error) {
		cur := next.Sites.Get(id)
		if cur == nil {
			return nil, fmt.Errorf("site %q: %w", id, ErrNotFound)
		}
		s := *cur
		s.Active = nil
		if active != nil {
			v := *active
			s.Active = &v
		}
		next.putSite(&s)
		out = s
		return []Change{putOp(bucketSites, id, &s)}, nil
	})
	return out, err
}

// AttachDomain attaches a hostname (normalized with NormalizeDomain) to a site.
// A domain attached by an operator is trusted: its status is verified.
func (r *Registry) AttachDomain(ctx context.Context, siteID, name string) (Domain, error) {
	return r.AttachDomainVia(ctx, siteID, name, ViaOperator)
}

// AttachDomainVia attaches a domain proven by via (ViaOperator, ViaCNAME,
// ViaTXT), verified; ViaTenant attaches it pending (VerifyDomain). One of
// tollgate's own names (Reserve) is refused with ErrReserved, whoever asks.
func (r *Registry) AttachDomainVia(ctx context.Context, siteID, name, via string) (Domain, error) {
	host, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, invalid(fmt.Errorf("domain: %w", err))
	}
	if err := r.CheckReserved(host); err != nil {
		return Domain{}, err
	}
	status := DomainVerified
	if via == ViaTenant {
		status = DomainPending
	}
	d := Domain{Name: host, Site: siteID, Status: status, Via: via, CreatedAt: At(r.now())}
	err = r.update(ctx, func(next *tx) ([]Change, error) {
		site := next.Sites.Get(siteID)
		if site == nil {
			return nil, fmt.Errorf("site %q: %w", siteID, ErrNotFound)
		}
		if cur := next.Domains.Get(host); cur != nil {
			return nil, fmt.Errorf("domain %q is already attached to site %q: %w", host, cur.Site, ErrConflict)
		}
		if err := next.domainLimit(next.Orgs.Get(site.Org)); err != nil {
			return nil, err
		}
		next.putDomain(&d)
		return []Change{putOp(bucketDomains, host, &d)}, nil
	})
	return d, err
}

// VerifyDomain marks a pending domain verified, proven by via (ViaCNAME,
// ViaTXT); a verified one is left as it is.
func (r *Registry) VerifyDomain(ctx context.Context, name, via string) (Domain, error) {
	host, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, invalid(fmt.Errorf("domain: %w", err))
	}
	var d Domain
	err = r.update(ctx, func(next *tx) ([]Change, error) {
		cur := next.Domains.Get(host)
		if cur == nil {
			return nil, fmt.Errorf("domain %q: %w", host, ErrNotFound)
		}
		d = *cur
		if d.Status == DomainVerified {
			return nil, nil
		}
		d.Status, d.Via = DomainVerified, via
		next.putDomain(&d)
		return []Change{putOp(bucketDomains, host, &d)}, nil
	})
	return d, err
}

// Domain returns an attached domain; name is normalized first.
func (r *Registry) Domain(name string) (Domain, error) {
	host, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, invalid(fmt.Errorf("domain: %w", err))
	}
	return lookup(r.Snapshot().Domains, "domain", host)
}

// lookup is a copy of m[key], or ErrNotFound naming kind and key.
func lookup[T any](m cowmap.Map[*T], kind, key string) (T, error) {
	v := m.Get(key)
	if v == nil {
		var zero T
		return zero, fmt.Errorf("%s %q: %w", kind, key, ErrNotFound)
	}
	return *v, nil
}

// DetachDomain removes a domain; name is normalized first.
func (r *Registry) DetachDomain(ctx context.Context, name string) error {
	host, err := NormalizeDomain(name)
	if err != nil {
		return invalid(fmt.Errorf("domain: %w", err))
	}
	return r.update(ctx, func(next *tx) ([]Change, error) {
		if next.Domains.Get(host) == nil {
			return nil, fmt.Errorf("domain %q: %w", host, ErrNotFound)
		}
		next.deleteDomain(host)
		return []Change{deleteOp(bucketDomains, host)}, nil
	})
}

// DomainOrg returns the org of the site the (normalized) domain name is
// attached to and whether the domain is verified; ok is false when it is not
// attached. It reads the snapshot only.
func (r *Registry) DomainOrg(name string) (org string, verified, ok bool) {
	s := r.Snapshot()
	d := s.Domains.Get(name)
	if d == nil {
		return "", false, false
	}
	site := s.Sites.Get(d.Site)
	if site == nil {
		return "", false, false
	}
	return site.Org, d.Status == DomainVerified, true
}

// OwnerOrg returns the org that pays for a Gitea owner's pages (see
// Snapshot.OrgForGiteaOwner).
func (r *Registry) OwnerOrg(owner string) string { return r.Snapshot().OrgForGiteaOwner(owner) }
