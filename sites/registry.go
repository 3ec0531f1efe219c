// Package sites knows what tollgate serves: the registry of plans, orgs, sites
// and domains, and the content sources (directories, Gitea) and their cache.
//
// The registry persists every write through a Store and publishes an immutable
// Snapshot, swapped atomically, that the request path reads without locks.
package sites

import (
	"context"
	"encoding/json"
	"errors"

	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-edge/tollgate/store"
)

// Store is the durable state the registry needs: scan a bucket, apply a batch
// atomically. *store.Bolt implements it.
type Store interface {
	Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error
	Apply(ctx context.Context, ops ...store.Op) error
}

// Bucket names of the registry's records.
const (
	bucketPlans   = "plans"
	bucketOrgs    = "orgs"
	bucketSites   = "sites"
	bucketDomains = "domains"
)

// Snapshot is one immutable view of the registry. Never modify what it holds.
type Snapshot struct {
	Plans   map[string]*Plan
	Orgs    map[string]*Org
	Sites   map[string]*Site
	Domains map[string]*Domain
	// Version grows by one with every write.
	Version uint64
	// GiteaOwners maps a Gitea owner to the org that claimed it.
	GiteaOwners map[string]string
}

func (s *Snapshot) clone() *Snapshot {
	return &Snapshot{
		Plans:   maps.Clone(s.Plans),
		Orgs:    maps.Clone(s.Orgs),
		Sites:   maps.Clone(s.Sites),
		Domains: maps.Clone(s.Domains),
		Version: s.Version + 1,
		// Read-only until index() rebuilds it after the write.
		GiteaOwners: s.GiteaOwners,
	}
}

// index rebuilds the derived maps after a change.
func (s *Snapshot) index() {
	s.GiteaOwners = map[string]string{}
	for id, o := range s.Orgs {
		for _, owner := range o.GiteaOwners {
			s.GiteaOwners[owner] = id
		}
	}
}

// OrgForGiteaOwner returns the id of the org that pays for owner's pages:
// the org that lists it in gitea_owners, else the synthetic "gitea-{owner}".
func (s *Snapshot) OrgForGiteaOwner(owner string) string {
	if id, ok := s.GiteaOwners[owner]; ok {
		return id
	}
	return SyntheticOrgID(owner)
}

// OwnerHasOrg reports whether an org pays for owner's pages: one that
// lists it in gitea_owners, or its synthetic org. It does not allocate.
func (s *Snapshot) OwnerHasOrg(owner []byte) bool {
	if _, ok := s.GiteaOwners[string(owner)]; ok {
		return true
	}
	var buf [64]byte
	return s.Orgs[string(append(append(buf[:0], syntheticPrefix...), owner...))] != nil
}

// syntheticPrefix starts the id of a synthetic org.
const syntheticPrefix = "gitea-"

// SyntheticOrgID is the id of the org created for a Gitea owner no org
// claimed.
func SyntheticOrgID(owner string) string { return syntheticPrefix + owner }

// SitesOf returns the ids of the org's sites, sorted.
func (s *Snapshot) SitesOf(org string) []string {
	var ids []string
	for id, site := range s.Sites {
		if site.Org == org {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// DomainsOf returns the names of the site's domains, sorted.
func (s *Snapshot) DomainsOf(site string) []string {
	var names []string
	for name, d := range s.Domains {
		if d.Site == site {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func (s *Snapshot) domainCountOfOrg(org string) int {
	n := 0
	for _, d := range s.Domains {
		if site := s.Sites[d.Site]; site != nil && site.Org == org {
			n++
		}
	}
	return n
}

// Registry owns the plans, orgs, sites and domains. Reads go to Snapshot;
// writes are serialized, persisted, then published.
type Registry struct {
	st   Store
	now  func() time.Time
	snap atomic.Pointer[Snapshot]
	// reserved holds tollgate's own hostnames (Reserve); nil: none.
	reserved atomic.Pointer[reservedSet]

	mu   sync.Mutex // serializes writes and subscriber calls
	subs []func(*Snapshot)
	// seen is the store's version (see versioned) at the last load, -1 for
	// a store without one. Guarded by mu.
	seen int64
	// lost is set while the store does not hold the registry this node
	// serves (see Reload); nil otherwise.
	lost atomic.Pointer[Loss]
}

// New loads the registry from st. On an empty store it creates the built-in
// "free" plan (FreePlan).
func New(ctx context.Context, st Store) (*Registry, error) {
	r := &Registry{st: st, now: time.Now}
	snap := &Snapshot{Plans: map[string]*Plan{}, Orgs: map[string]*Org{}, Sites: map[string]*Site{}, Domains: map[string]*Domain{}}
	var err error
	if r.seen, err = r.storeVersion(ctx); err != nil {
		return nil, err
	}
	if err := loadAll(ctx, st, snap); err != nil {
		return nil, err
	}
	snap.index()
	r.snap.Store(snap)
	if len(snap.Plans) == 0 {
		if _, err := r.PutPlan(ctx, FreePlan); err != nil {
			return nil, fmt.Errorf("sites: creating the built-in free plan: %w", err)
		}
	}
	return r, nil
}

// loadAll reads every record into snap.
func loadAll(ctx context.Context, st Store, snap *Snapshot) error {
	if err := load(ctx, st, bucketPlans, snap.Plans, func(p *Plan) string { return p.Name }); err != nil {
		return err
	}
	if err := load(ctx, st, bucketOrgs, snap.Orgs, func(o *Org) string { return o.ID }); err != nil {
		return err
	}
	if err := load(ctx, st, bucketSites, snap.Sites, func(s *Site) string { return s.ID }); err != nil {
		return err
	}
	return load(ctx, st, bucketDomains, snap.Domains, func(d *Domain) string { return d.Name })
}

// Reload reads the whole registry from the store again and publishes it if
// it differs from the current snapshot. With a store shared by several
// nodes (Redis), it is how a node sees the others' writes. On error the
// current snapshot stays.
//
// A registry the store lost under this node (empty, or at a version below
// the one last loaded) is not published: the node keeps its snapshot,
// Lost reports the loss, writes are refused, and Reload returns an error
// wrapping ErrRegistryLost. The loss ends when the store holds the same
// records as the snapshot again (a restore from this or another node); a
// restarted node loads whatever the store holds.
func (r *Registry) Reload(ctx context.Context) (changed bool, err error) {
	ver, err := r.storeVersion(ctx) // before the records: a write in between only makes ver low
	if err != nil {
		return false, err
	}
	next := &Snapshot{Plans: map[string]*Plan{}, Orgs: map[string]*Org{}, Sites: map[string]*Site{}, Domains: map[string]*Domain{}}
	if err := loadAll(ctx, r.st, next); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.snap.Load()
	same := sameRecords(cur, next)
	if loss := r.lost.Load(); loss != nil {
		if !same {
			return false, loss.Err()
		}
		r.lost.Store(nil) // restored
	} else if reason := lossOf(cur, next, r.seen, ver, same); reason != "" {
		loss := &Loss{Reason: reason, Since: r.now(), Orgs: len(cur.Orgs), Sites: len(cur.Sites), Domains: len(cur.Domains)}
		r.lost.Store(loss)
		return false, loss.Err()
	}
	r.seen = ver
	if same {
		return false, nil
	}
	next.Version = cur.Version + 1
	next.index()
	r.snap.Store(next)
	for _, fn := range r.subs {
		fn(next)
	}
	return true, nil
}

// sameRecords reports whether two snapshots hold equal records.
func sameRecords(a, b *Snapshot) bool {
	return mapsEqual(a.Plans, b.Plans) && mapsEqual(a.Orgs, b.Orgs) && mapsEqual(a.Sites, b.Sites) && mapsEqual(a.Domains, b.Domains)
}

func mapsEqual[T any](a, b map[string]*T) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok {
			return false
		}
		jx, _ := json.Marshal(x)
		jy, _ := json.Marshal(y)
		if string(jx) != string(jy) {
			return false
		}
	}
	return true
}

func load[T any](ctx context.Context, st Store, bucket string, into map[string]*T, key func(*T) string) error {
	return st.Scan(ctx, bucket, func(k, v []byte) error {
		rec := new(T)
		if err := json.Unmarshal(v, rec); err != nil {
			return fmt.Errorf("sites: corrupt record %s/%s: %w", bucket, k, err)
		}
		into[key(rec)] = rec
		return nil
	})
}

// Snapshot returns the current immutable view. It never blocks.
func (r *Registry) Snapshot() *Snapshot { return r.snap.Load() }

// OnChange registers fn to be called with every new snapshot, in order, and
// once right away with the current one. fn must be fast; it runs under the
// registry's write lock.
func (r *Registry) OnChange(fn func(*Snapshot)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs = append(r.subs, fn)
	fn(r.snap.Load())
}

// update runs fn on a copy of the snapshot under the write lock, persists the
// ops it returns and publishes the copy. While the store has lost the
// registry (Lost), it refuses: one record written into a wiped store would
// become the whole registry for every node that starts next.
func (r *Registry) update(ctx context.Context, fn func(next *Snapshot) ([]store.Op, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if loss := r.lost.Load(); loss != nil {
		return loss.Err()
	}
	next := r.snap.Load().clone()
	ops, err := fn(next)
	if err != nil {
		return err
	}
	if err := r.st.Apply(ctx, ops...); err != nil {
		return fmt.Errorf("sites: persisting: %w", err)
	}
	next.index()
	r.snap.Store(next)
	for _, fn := range r.subs {
		fn(next)
	}
	return nil
}

func putOp(bucket, key string, v any) store.Op {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // records are plain structs: Marshal cannot fail
	}
	return store.Put(bucket, key, b)
}

func invalid(err error) error { return fmt.Errorf("%w: %w", ErrInvalid, err) }

// PutPlan creates or replaces a plan. It reports whether the plan is new.
func (r *Registry) PutPlan(ctx context.Context, p Plan) (created bool, err error) {
	if err := p.Validate(); err != nil {
		return false, invalid(err)
	}
	err = r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		created = next.Plans[p.Name] == nil
		next.Plans[p.Name] = &p
		return []store.Op{putOp(bucketPlans, p.Name, &p)}, nil
	})
	return created, err
}

// Plan returns a plan by name.
func (r *Registry) Plan(name string) (Plan, error) {
	p := r.Snapshot().Plans[name]
	if p == nil {
		return Plan{}, fmt.Errorf("plan %q: %w", name, ErrNotFound)
	}
	return *p, nil
}

// CreateOrg adds an org. State defaults to active; the plan must exist.
func (r *Registry) CreateOrg(ctx context.Context, o Org) (Org, error) {
	if o.State == "" {
		o.State = StateActive
	}
	if err := o.Validate(); err != nil {
		return Org{}, invalid(err)
	}
	o.CreatedAt = r.now().UTC()
	err := r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		if next.Orgs[o.ID] != nil {
			return nil, fmt.Errorf("org %q already exists: %w", o.ID, ErrConflict)
		}
		if next.Plans[o.Plan] == nil {
			return nil, invalid(fmt.Errorf("plan: %q does not exist", o.Plan))
		}
		for _, owner := range o.GiteaOwners {
			if other, ok := next.GiteaOwners[owner]; ok {
				return nil, fmt.Errorf("gitea owner %q already belongs to org %q: %w", owner, other, ErrConflict)
			}
		}
		next.Orgs[o.ID] = &o
		return []store.Op{putOp(bucketOrgs, o.ID, &o)}, nil
	})
	return o, err
}

// EnsureGiteaOrg makes sure an org pays for owner's pages: the org that
// claimed the owner, or else a synthetic "gitea-{owner}" org on plan, created
// now. It is called on an owner's first request, off the request path.
func (r *Registry) EnsureGiteaOrg(ctx context.Context, owner, plan string) error {
	id := r.Snapshot().OrgForGiteaOwner(owner)
	if r.Snapshot().Orgs[id] != nil {
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
	o := r.Snapshot().Orgs[id]
	if o == nil {
		return Org{}, fmt.Errorf("org %q: %w", id, ErrNotFound)
	}
	return *o, nil
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
}

// UpdateOrg applies patch to the org.
func (r *Registry) UpdateOrg(ctx context.Context, id string, patch OrgPatch) (Org, error) {
	var out Org
	err := r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		cur := next.Orgs[id]
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
			if other, ok := next.GiteaOwners[owner]; ok && other != id {
				return nil, fmt.Errorf("gitea owner %q already belongs to org %q: %w", owner, other, ErrConflict)
			}
		}
		if next.Plans[o.Plan] == nil {
			return nil, invalid(fmt.Errorf("plan: %q does not exist", o.Plan))
		}
		next.Orgs[id] = &o
		out = o
		return []store.Op{putOp(bucketOrgs, id, &o)}, nil
	})
	return out, err
}

// ModifyOrg changes org id with fn, which edits a copy and may return more
// operations to persist in the same transaction (billing's event records).
// fn runs under the registry's write lock: it must be quick and must not call
// the registry. The result is validated like UpdateOrg's.
func (r *Registry) ModifyOrg(ctx context.Context, id string, fn func(o *Org, s *Snapshot) ([]store.Op, error)) (Org, error) {
	var out Org
	err := r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		cur := next.Orgs[id]
		if cur == nil {
			return nil, fmt.Errorf("org %q: %w", id, ErrNotFound)
		}
		o := *cur
		o.GiteaOwners = slices.Clone(cur.GiteaOwners)
		extra, err := fn(&o, next)
		if err != nil {
			return nil, err
		}
		if err := o.Validate(); err != nil {
			return nil, invalid(err)
		}
		if next.Plans[o.Plan] == nil {
			return nil, invalid(fmt.Errorf("plan: %q does not exist", o.Plan))
		}
		next.Orgs[id] = &o
		out = o
		return append([]store.Op{putOp(bucketOrgs, id, &o)}, extra...), nil
	})
	return out, err
}

// DeleteOrg removes an org that owns no sites.
func (r *Registry) DeleteOrg(ctx context.Context, id string) error {
	return r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		if next.Orgs[id] == nil {
			return nil, fmt.Errorf("org %q: %w", id, ErrNotFound)
		}
		if n := len(next.SitesOf(id)); n > 0 {
			return nil, fmt.Errorf("org %q still owns %d site(s); delete them first: %w", id, n, ErrConflict)
		}
		delete(next.Orgs, id)
		return []store.Op{store.Delete(bucketOrgs, id)}, nil
	})
}

// CreateSite adds a site to an org, within its plan's site limit.
func (r *Registry) CreateSite(ctx context.Context, s Site) (Site, error) {
	if err := s.Validate(); err != nil {
		return Site{}, invalid(err)
	}
	s.CreatedAt = r.now().UTC()
	err := r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		org := next.Orgs[s.Org]
		if org == nil {
			return nil, fmt.Errorf("org %q: %w", s.Org, ErrNotFound)
		}
		if next.Sites[s.ID] != nil {
			return nil, fmt.Errorf("site %q already exists: %w", s.ID, ErrConflict)
		}
		if plan := next.Plans[org.Plan]; plan != nil && plan.Sites > 0 && len(next.SitesOf(org.ID)) >= plan.Sites {
			return nil, &LimitError{Limit: "sites", Max: plan.Sites, Plan: plan.Name}
		}
		next.Sites[s.ID] = &s
		return []store.Op{putOp(bucketSites, s.ID, &s)}, nil
	})
	return s, err
}

// Site returns a site by id.
func (r *Registry) Site(id string) (Site, error) {
	s := r.Snapshot().Sites[id]
	if s == nil {
		return Site{}, fmt.Errorf("site %q: %w", id, ErrNotFound)
	}
	return *s, nil
}

// DeleteSite removes a site and detaches its domains.
func (r *Registry) DeleteSite(ctx context.Context, id string) error {
	return r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		if next.Sites[id] == nil {
			return nil, fmt.Errorf("site %q: %w", id, ErrNotFound)
		}
		ops := []store.Op{store.Delete(bucketSites, id)}
		for _, name := range next.DomainsOf(id) {
			delete(next.Domains, name)
			ops = append(ops, store.Delete(bucketDomains, name))
		}
		delete(next.Sites, id)
		return ops, nil
	})
}

// AttachDomain attaches a hostname (normalized with NormalizeDomain) to a site.
// A domain attached by an operator is trusted: its status is verified.
func (r *Registry) AttachDomain(ctx context.Context, siteID, name string) (Domain, error) {
	return r.AttachDomainVia(ctx, siteID, name, ViaOperator)
}

// AttachDomainVia attaches a domain proven by via (ViaOperator, ViaCNAME,
// ViaTXT). One of tollgate's own names (Reserve) is refused with
// ErrReserved, whoever asks.
func (r *Registry) AttachDomainVia(ctx context.Context, siteID, name, via string) (Domain, error) {
	host, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, invalid(fmt.Errorf("domain: %w", err))
	}
	if err := r.checkReserved(host); err != nil {
		return Domain{}, err
	}
	d := Domain{Name: host, Site: siteID, Status: DomainVerified, Via: via, CreatedAt: r.now().UTC()}
	err = r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		site := next.Sites[siteID]
		if site == nil {
			return nil, fmt.Errorf("site %q: %w", siteID, ErrNotFound)
		}
		if cur := next.Domains[host]; cur != nil {
			return nil, fmt.Errorf("domain %q is already attached to site %q: %w", host, cur.Site, ErrConflict)
		}
		org := next.Orgs[site.Org]
		if org != nil {
			if plan := next.Plans[org.Plan]; plan != nil && plan.Domains > 0 && next.domainCountOfOrg(org.ID) >= plan.Domains {
				return nil, &LimitError{Limit: "domains", Max: plan.Domains, Plan: plan.Name}
			}
		}
		next.Domains[host] = &d
		return []store.Op{putOp(bucketDomains, host, &d)}, nil
	})
	return d, err
}

// Domain returns an attached domain; name is normalized first.
func (r *Registry) Domain(name string) (Domain, error) {
	host, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, invalid(fmt.Errorf("domain: %w", err))
	}
	d := r.Snapshot().Domains[host]
	if d == nil {
		return Domain{}, fmt.Errorf("domain %q: %w", host, ErrNotFound)
	}
	return *d, nil
}

// DetachDomain removes a domain; name is normalized first.
func (r *Registry) DetachDomain(ctx context.Context, name string) error {
	host, err := NormalizeDomain(name)
	if err != nil {
		return invalid(fmt.Errorf("domain: %w", err))
	}
	return r.update(ctx, func(next *Snapshot) ([]store.Op, error) {
		if next.Domains[host] == nil {
			return nil, fmt.Errorf("domain %q: %w", host, ErrNotFound)
		}
		delete(next.Domains, host)
		return []store.Op{store.Delete(bucketDomains, host)}, nil
	})
}

// DomainOrg returns the org of the site the (normalized) domain name is
// attached to and whether the domain is verified; ok is false when it is not
// attached. It reads the snapshot only.
func (r *Registry) DomainOrg(name string) (org string, verified, ok bool) {
	s := r.Snapshot()
	d := s.Domains[name]
	if d == nil {
		return "", false, false
	}
	site := s.Sites[d.Site]
	if site == nil {
		return "", false, false
	}
	return site.Org, d.Status == DomainVerified, true
}

// OwnerOrg returns the org that pays for a Gitea owner's pages (see
// Snapshot.OrgForGiteaOwner).
func (r *Registry) OwnerOrg(owner string) string { return r.Snapshot().OrgForGiteaOwner(owner) }
