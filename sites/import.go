package sites

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"time"
)

// Bulk import and export: operators moving from another host load their
// plans, orgs, sites and domains in batches, each batch one store
// transaction (one registry write), instead of a write per record.

// Record is one line of an import or export file (NDJSON): exactly one of
// its fields is set.
type Record struct {
	Plan   *Plan   `json:"plan,omitempty"`
	Org    *Org    `json:"org,omitempty"`
	Site   *Site   `json:"site,omitempty"`
	Domain *Domain `json:"domain,omitempty"`
}

// Kind is "plan", "org", "site" or "domain"; "" when not exactly one field
// is set.
func (rec Record) Kind() string {
	kind, n := "", 0
	for _, f := range [...]struct {
		set  bool
		name string
	}{{rec.Plan != nil, "plan"}, {rec.Org != nil, "org"}, {rec.Site != nil, "site"}, {rec.Domain != nil, "domain"}} {
		if f.set {
			kind, n = f.name, n+1
		}
	}
	if n != 1 {
		return ""
	}
	return kind
}

// Import outcomes.
const (
	Created   = "created"
	Updated   = "updated"
	Unchanged = "unchanged"
	Refused   = "refused"
)

// ImportResult is what Import did with one record.
type ImportResult struct {
	Kind    string `json:"kind"`
	ID      string `json:"id"`
	Outcome string `json:"outcome"` // Created, Updated, Unchanged or Refused
	// Err says why a record was refused: it matches ErrInvalid,
	// ErrConflict (a LimitError among them) or ErrNotFound as the single
	// writes do.
	Err error `json:"-"`
}

// MaxImportBatch bounds the records of one Import call.
const MaxImportBatch = 1000

// Import creates or replaces the records, in order, as one registry write:
// a record sees the ones before it (an org, then its sites). Each record
// is checked as the single write for it is (validation, references, plan
// limits, reserved names, a domain attached elsewhere) and refused alone
// when it fails; the others are written. Importing the same records again
// changes nothing (Unchanged). An imported record keeps its created_at
// (now when it has none, or the existing record's). A batch is all or
// nothing on the store: an error from it writes none.
func (r *Registry) Import(ctx context.Context, recs []Record) ([]ImportResult, error) {
	if len(recs) > MaxImportBatch {
		return nil, invalid(fmt.Errorf("%d records in one batch; at most %d", len(recs), MaxImportBatch))
	}
	out := make([]ImportResult, len(recs))
	now := r.now().UTC()
	err := r.update(ctx, func(t *tx) ([]Change, error) {
		var ops []Change
		for i, rec := range recs {
			res, op := r.importOne(t, rec, now)
			out[i] = res
			if op != nil {
				ops = append(ops, *op)
			}
		}
		return ops, nil
	})
	if err != nil {
		return nil, err
	}
	// A batch reads and writes pages all over the store's file; an import
	// of a million sites would leave all of it resident.
	r.evict(ctx)
	return out, nil
}

// importOne checks one record against t and, when it is to be written,
// applies it to t and returns its store change.
func (r *Registry) importOne(t *tx, rec Record, now time.Time) (ImportResult, *Change) {
	res := ImportResult{Kind: rec.Kind()}
	var op Change
	var err error
	switch res.Kind {
	case "plan":
		res.ID = rec.Plan.Name
		res.Outcome, op, err = importPlan(t, *rec.Plan)
	case "org":
		res.ID = rec.Org.ID
		res.Outcome, op, err = importOrg(t, *rec.Org, now)
	case "site":
		res.ID = rec.Site.ID
		res.Outcome, op, err = importSite(t, *rec.Site, now)
	case "domain":
		res.ID = rec.Domain.Name
		res.Outcome, op, err = r.importDomain(t, *rec.Domain, now)
	default:
		err = invalid(errors.New(`a record has exactly one of "plan", "org", "site", "domain"`))
	}
	if err != nil {
		res.Outcome, res.Err = Refused, err
		return res, nil
	}
	if res.Outcome == Unchanged {
		return res, nil
	}
	return res, &op
}

// outcome is Unchanged when cur (nil: none) equals next, else Created or
// Updated.
func outcome[T any](cur, next *T) string {
	switch {
	case cur == nil:
		return Created
	case sameJSON(cur, next):
		return Unchanged
	default:
		return Updated
	}
}

func sameJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func importPlan(t *tx, p Plan) (string, Change, error) {
	if err := p.Validate(); err != nil {
		return "", Change{}, invalid(err)
	}
	o := outcome(t.Plans.Get(p.Name), &p)
	if o != Unchanged {
		t.putPlan(&p)
	}
	return o, putOp(bucketPlans, p.Name, &p), nil
}

func importOrg(t *tx, o Org, now time.Time) (string, Change, error) {
	if o.State == "" {
		o.State = StateActive
	}
	cur := t.Orgs.Get(o.ID)
	o.CreatedAt = createdAt(o.CreatedAt, cur, func(c *Org) Instant { return c.CreatedAt }, now)
	o.GiteaOwners = slices.Compact(slices.Sorted(slices.Values(o.GiteaOwners)))
	if err := o.Validate(); err != nil {
		return "", Change{}, invalid(err)
	}
	if t.Plans.Get(o.Plan) == nil {
		return "", Change{}, invalid(fmt.Errorf("plan: %q does not exist", o.Plan))
	}
	for _, owner := range o.GiteaOwners {
		if other := t.owners.Get(owner); other != "" && other != o.ID {
			return "", Change{}, fmt.Errorf("gitea owner %q already belongs to org %q: %w", owner, other, ErrConflict)
		}
	}
	out := outcome(cur, &o)
	if out != Unchanged {
		t.putOrg(&o)
	}
	return out, putOp(bucketOrgs, o.ID, &o), nil
}

func importSite(t *tx, s Site, now time.Time) (string, Change, error) {
	cur := t.Sites.Get(s.ID)
	s.CreatedAt = createdAt(s.CreatedAt, cur, func(c *Site) Instant { return c.CreatedAt }, now)
	if err := s.Validate(); err != nil {
		return "", Change{}, invalid(err)
	}
	org := t.Orgs.Get(s.Org)
	switch {
	case org == nil:
		return "", Change{}, fmt.Errorf("org %q: %w", s.Org, ErrNotFound)
	case cur != nil && cur.Org != s.Org:
		return "", Change{}, fmt.Errorf("site %q belongs to org %q: %w", s.ID, cur.Org, ErrConflict)
	}
	if cur == nil {
		if err := t.siteLimit(org); err != nil {
			return "", Change{}, err
		}
	}
	out := outcome(cur, &s)
	if out != Unchanged {
		t.putSite(&s)
	}
	return out, putOp(bucketSites, s.ID, &s), nil
}

func (r *Registry) importDomain(t *tx, d Domain, now time.Time) (string, Change, error) {
	host, err := NormalizeDomain(d.Name)
	if err != nil {
		return "", Change{}, invalid(fmt.Errorf("domain: %w", err))
	}
	if err := r.CheckReserved(host); err != nil {
		return "", Change{}, err
	}
	d.Name = host
	d.Status = cmp.Or(d.Status, DomainVerified)
	d.Via = cmp.Or(d.Via, ViaOperator)
	if d.Status != DomainVerified && d.Status != DomainPending {
		return "", Change{}, invalid(fmt.Errorf("status: %q; imported domains are %q or %q", d.Status, DomainVerified, DomainPending))
	}
	cur := t.Domains.Get(host)
	d.CreatedAt = createdAt(d.CreatedAt, cur, func(c *Domain) Instant { return c.CreatedAt }, now)
	site := t.Sites.Get(d.Site)
	switch {
	case site == nil:
		return "", Change{}, fmt.Errorf("site %q: %w", d.Site, ErrNotFound)
	case cur != nil && cur.Site != d.Site:
		return "", Change{}, fmt.Errorf("domain %q is already attached to site %q: %w", host, cur.Site, ErrConflict)
	}
	if cur == nil {
		if err := t.domainLimit(t.Orgs.Get(site.Org)); err != nil {
			return "", Change{}, err
		}
	}
	out := outcome(cur, &d)
	if out != Unchanged {
		t.putDomain(&d)
	}
	return out, putOp(bucketDomains, host, &d), nil
}

// createdAt is an imported record's creation time: its own, else the
// existing record's, else now.
func createdAt[T any](own Instant, cur *T, of func(*T) Instant, now time.Time) Instant {
	switch {
	case !own.IsZero():
		return own
	case cur != nil:
		return of(cur)
	default:
		return At(now)
	}
}

// Export yields every record of s in the order an import needs them: plans,
// orgs, sites, domains, each sorted by id.
func (s *Snapshot) Export() iter.Seq[Record] {
	return func(yield func(Record) bool) {
		for _, name := range sortedKeys(s.Plans.All()) {
			if !yield(Record{Plan: s.Plans.Get(name)}) {
				return
			}
		}
		for _, id := range sortedKeys(s.Orgs.All()) {
			if !yield(Record{Org: s.Orgs.Get(id)}) {
				return
			}
		}
		for _, id := range sortedKeys(s.Sites.All()) {
			if !yield(Record{Site: s.Sites.Get(id)}) {
				return
			}
		}
		for _, name := range sortedKeys(s.Domains.All()) {
			if !yield(Record{Domain: s.Domains.Get(name)}) {
				return
			}
		}
	}
}

func sortedKeys[V any](all iter.Seq2[string, V]) []string {
	var keys []string
	for k := range all {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
