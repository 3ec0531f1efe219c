package sites

import (
	"slices"
	"strings"
	"sync"
	"unique"

	"github.com/tollgate-edge/tollgate/internal/cowmap"
)

// Snapshot is one immutable view of the registry. Never modify what it
// holds. Versions share structure (cowmap): a write copies the records of
// one shard of each map it touches, so its cost does not grow with the
// registry.
type Snapshot struct {
	Plans   cowmap.Map[*Plan]
	Orgs    cowmap.Map[*Org]
	Sites   cowmap.Map[*Site]
	Domains cowmap.Map[*Domain]
	// Version grows by one with every write.
	Version uint64

	// Indexes, kept in step by every write (tx).
	owners        cowmap.Map[string] // Gitea owner → the org that claimed it
	sitesByOrg    cowmap.Map[set]    // org → its sites' ids
	domainsBySite cowmap.Map[set]    // site → its domains' names
}

// Delta names the records one write changed (created, replaced or
// deleted), by bucket. Subscribers (OnChange) get it with the snapshot
// that has the changes; a nil *Delta means any record may have changed (the
// first call, a full reload).
type Delta struct {
	Plans, Orgs, Sites, Domains []string
}

// OrgForGiteaOwner returns the id of the org that pays for owner's pages:
// the org that lists it in gitea_owners, else the synthetic "gitea-{owner}".
func (s *Snapshot) OrgForGiteaOwner(owner string) string {
	if id, ok := s.owners.Lookup(owner); ok {
		return id
	}
	return SyntheticOrgID(owner)
}

// OwnerHasOrg reports whether an org pays for owner's pages: one that
// lists it in gitea_owners, or its synthetic org. It does not allocate.
func (s *Snapshot) OwnerHasOrg(owner []byte) bool {
	if s.owners.GetBytes(owner) != "" {
		return true
	}
	var buf [64]byte
	return s.Orgs.GetBytes(append(append(buf[:0], syntheticPrefix...), owner...)) != nil
}

// syntheticPrefix starts the id of a synthetic org.
const syntheticPrefix = "gitea-"

// SyntheticOrgID is the id of the org created for a Gitea owner no org
// claimed.
func SyntheticOrgID(owner string) string { return syntheticPrefix + owner }

// SitesOf returns the ids of the org's sites, sorted.
func (s *Snapshot) SitesOf(org string) []string { return s.sitesByOrg.Get(org).sorted() }

// DomainsOf returns the names of the site's domains, sorted.
func (s *Snapshot) DomainsOf(site string) []string { return s.domainsBySite.Get(site).sorted() }

// SiteCount is how many sites the org owns; it does not allocate.
func (s *Snapshot) SiteCount(org string) int { return s.sitesByOrg.Get(org).Len() }

// DomainCount is how many domains the org's sites have; it does not
// allocate.
func (s *Snapshot) DomainCount(org string) int {
	n := 0
	for site := range s.sitesByOrg.Get(org).All() {
		n += s.domainsBySite.Get(site).Len()
	}
	return n
}

// snapshotOf builds a snapshot, and its indexes, from the records of a
// load, each slice sorted by key without repeats (byKey). The records are
// not yet shared: their strings are interned in place.
func snapshotOf(plans []*Plan, orgs []*Org, sites []*Site, domains []*Domain) *Snapshot {
	owners := map[string]string{}
	for _, o := range orgs {
		o.intern()
		for _, owner := range o.GiteaOwners {
			owners[owner] = o.ID
		}
	}
	for _, site := range sites {
		site.intern(nil) // its org's id: indexOf
	}
	for _, d := range domains {
		d.intern(nil)
	}
	s := &Snapshot{owners: cowmap.From(owners)}
	var wg sync.WaitGroup // independent: built at once
	wg.Go(func() { s.Plans = mapOf(plans, planName) })
	wg.Go(func() { s.Orgs = mapOf(orgs, orgID) })
	wg.Go(func() { s.Sites = mapOf(sites, siteID) })
	wg.Go(func() { s.Domains = mapOf(domains, domainName) })
	wg.Go(func() { s.sitesByOrg = indexOf(sites, orgs, siteID, func(s *Site) *string { return &s.Org }, orgID) })
	wg.Go(func() {
		s.domainsBySite = indexOf(domains, sites, domainName, func(d *Domain) *string { return &d.Site }, siteID)
	})
	wg.Wait()
	return s
}

func planName(p *Plan) string     { return p.Name }
func orgID(o *Org) string         { return o.ID }
func siteID(s *Site) string       { return s.ID }
func domainName(d *Domain) string { return d.Name }

// mapOf is the map of recs, sorted by key without repeats, by key.
func mapOf[T any](recs []*T, key func(*T) string) cowmap.Map[*T] {
	return cowmap.Build(len(recs), func(yield func(string, *T) bool) {
		for _, rec := range recs {
			if !yield(key(rec), rec) {
				return
			}
		}
	})
}

// link is one record (child) of a parent: a site of an org, a domain of a
// site. field is the child's field naming the parent.
type link struct {
	parent, child string
	field         *string
}

// indexOf maps the key of each parent of children to the set of its
// children's keys. A child whose parent is among parents (sorted by key)
// is given the parent's own key string, so the two share one copy: a
// merge of the sorted links with parents, no look-up per child.
func indexOf[C, P any](children []*C, parents []*P, key func(*C) string, parentOf func(*C) *string, parentKey func(*P) string) cowmap.Map[set] {
	links := make([]link, len(children))
	for i, c := range children {
		links[i] = link{parent: *parentOf(c), child: key(c), field: parentOf(c)}
	}
	slices.SortFunc(links, func(a, b link) int { return strings.Compare(a.parent, b.parent) })
	type group struct {
		parent  string
		members set
	}
	var groups []group
	p := 0
	for i := 0; i < len(links); {
		parent, j := links[i].parent, i+1
		for j < len(links) && links[j].parent == parent {
			j++
		}
		for p < len(parents) && parentKey(parents[p]) < parent {
			p++
		}
		if p < len(parents) && parentKey(parents[p]) == parent {
			parent = parentKey(parents[p])
			for _, l := range links[i:j] {
				*l.field = parent
			}
		}
		groups = append(groups, group{parent: parent, members: membersOf(links[i:j])})
		i = j
	}
	return cowmap.Build(len(groups), func(yield func(string, set) bool) {
		for _, g := range groups {
			if !yield(g.parent, g.members) {
				return
			}
		}
	})
}

// membersOf is the set of the children of links.
func membersOf(links []link) set {
	if len(links) == 1 {
		return set{one: links[0].child}
	}
	keys := make([]string, 0, len(links))
	for _, l := range links {
		keys = append(keys, l.child)
	}
	slices.Sort(keys)
	return setOfSorted(keys)
}

// edit is a lazily started cowmap edit: reads go to base until the first
// write.
type edit[V any] struct {
	base cowmap.Map[V]
	e    *cowmap.Editor[V]
}

func (x *edit[V]) Get(k string) V {
	if x.e != nil {
		return x.e.Get(k)
	}
	return x.base.Get(k)
}

func (x *edit[V]) set(k string, v V) {
	if x.e == nil {
		x.e = x.base.Edit()
	}
	x.e.Set(k, v)
}

func (x *edit[V]) del(k string) {
	if _, ok := x.base.Lookup(k); !ok && x.e == nil {
		return
	}
	if x.e == nil {
		x.e = x.base.Edit()
	}
	x.e.Delete(k)
}

func (x *edit[V]) copied() int {
	if x.e == nil {
		return 0
	}
	return x.e.Copied
}

func (x *edit[V]) result() cowmap.Map[V] {
	if x.e == nil {
		return x.base
	}
	return x.e.Map()
}

// tx is one write in progress: the next snapshot's maps being edited, the
// indexes kept in step, and the keys written (its Delta).
type tx struct {
	Plans   edit[*Plan]
	Orgs    edit[*Org]
	Sites   edit[*Site]
	Domains edit[*Domain]

	owners        edit[string]
	sitesByOrg    edit[set]
	domainsBySite edit[set]

	version uint64
	delta   Delta
	// indexCopied counts the entries the index sets' edits copied.
	indexCopied int
}

func newTx(cur *Snapshot) *tx {
	return &tx{
		Plans: edit[*Plan]{base: cur.Plans}, Orgs: edit[*Org]{base: cur.Orgs},
		Sites: edit[*Site]{base: cur.Sites}, Domains: edit[*Domain]{base: cur.Domains},
		owners: edit[string]{base: cur.owners}, sitesByOrg: edit[set]{base: cur.sitesByOrg},
		domainsBySite: edit[set]{base: cur.domainsBySite},
		version:       cur.Version + 1,
	}
}

// snapshot is the snapshot the write produced.
func (t *tx) snapshot() *Snapshot {
	return &Snapshot{
		Plans: t.Plans.result(), Orgs: t.Orgs.result(), Sites: t.Sites.result(), Domains: t.Domains.result(),
		Version: t.version,
		owners:  t.owners.result(), sitesByOrg: t.sitesByOrg.result(), domainsBySite: t.domainsBySite.result(),
	}
}

// Interning. Records hold few distinct values in some fields (plan
// names, states, kinds); each decoded record would hold its own copy.
// They are replaced by one shared copy (unique.Make), and a site's org id
// and a domain's site id by the bytes of the org's and site's own id (at
// a load, indexOf does that), so a registry of a million records does not
// hold a million copies of "active".
func intern(s string) string { return unique.Make(s).Value() }

func (o *Org) intern() {
	o.Plan, o.State = intern(o.Plan), intern(o.State)
}

func (s *Site) intern(org *Org) {
	if org != nil && org.ID == s.Org {
		s.Org = org.ID
	}
	s.Source.Type, s.Source.Branch = intern(s.Source.Type), intern(s.Source.Branch)
}

func (d *Domain) intern(site *Site) {
	if site != nil && site.ID == d.Site {
		d.Site = site.ID
	}
	d.Status, d.Via = intern(d.Status), intern(d.Via)
}

func (t *tx) putPlan(p *Plan) {
	t.Plans.set(p.Name, p)
	t.delta.Plans = append(t.delta.Plans, p.Name)
}

func (t *tx) deletePlan(name string) {
	t.Plans.del(name)
	t.delta.Plans = append(t.delta.Plans, name)
}

func (t *tx) putOrg(o *Org) {
	o.intern()
	if cur := t.Orgs.Get(o.ID); cur != nil {
		for _, owner := range cur.GiteaOwners {
			if t.owners.Get(owner) == o.ID {
				t.owners.del(owner)
			}
		}
	}
	for _, owner := range o.GiteaOwners {
		t.owners.set(owner, o.ID)
	}
	t.Orgs.set(o.ID, o)
	t.delta.Orgs = append(t.delta.Orgs, o.ID)
}

func (t *tx) deleteOrg(id string) {
	if cur := t.Orgs.Get(id); cur != nil {
		for _, owner := range cur.GiteaOwners {
			if t.owners.Get(owner) == id {
				t.owners.del(owner)
			}
		}
	}
	t.Orgs.del(id)
	t.delta.Orgs = append(t.delta.Orgs, id)
}

func (t *tx) putSite(s *Site) {
	s.intern(t.Orgs.Get(s.Org))
	putChild(t, &t.Sites, &t.sitesByOrg, s.ID, s.Org, s, siteOrg)
	t.delta.Sites = append(t.delta.Sites, s.ID)
}

func (t *tx) deleteSite(id string) {
	deleteChild(t, &t.Sites, &t.sitesByOrg, id, siteOrg)
	t.delta.Sites = append(t.delta.Sites, id)
}

func (t *tx) putDomain(d *Domain) {
	d.intern(t.Sites.Get(d.Site))
	putChild(t, &t.Domains, &t.domainsBySite, d.Name, d.Site, d, domainSite)
	t.delta.Domains = append(t.delta.Domains, d.Name)
}

func (t *tx) deleteDomain(name string) {
	deleteChild(t, &t.Domains, &t.domainsBySite, name, domainSite)
	t.delta.Domains = append(t.delta.Domains, name)
}

func siteOrg(s *Site) string      { return s.Org }
func domainSite(d *Domain) string { return d.Site }

// putChild sets record v under key and keeps index (parent key → the keys
// of its children) in step: a record that moves to another parent leaves
// the old one's set.
func putChild[T any](t *tx, records *edit[*T], index *edit[set], key, parent string, v *T, parentOf func(*T) string) {
	if cur := records.Get(key); cur != nil && parentOf(cur) != parent {
		t.indexCopied += removeFromIndex(index, parentOf(cur), key)
	}
	t.indexCopied += addToIndex(index, parent, key)
	records.set(key, v)
}

// deleteChild deletes the record under key and its entry in index.
func deleteChild[T any](t *tx, records *edit[*T], index *edit[set], key string, parentOf func(*T) string) {
	if cur := records.Get(key); cur != nil {
		t.indexCopied += removeFromIndex(index, parentOf(cur), key)
	}
	records.del(key)
}

// domainCountOfOrg is how many domains the org's sites have.
func (t *tx) domainCountOfOrg(org string) int {
	n := 0
	for site := range t.sitesByOrg.Get(org).All() {
		n += t.domainsBySite.Get(site).Len()
	}
	return n
}

// siteLimit is the error of one more site for org, nil when its plan allows
// it.
func (t *tx) siteLimit(org *Org) error {
	if plan := t.Plans.Get(org.Plan); plan != nil && plan.Sites > 0 && t.sitesByOrg.Get(org.ID).Len() >= plan.Sites {
		return &LimitError{Limit: "sites", Max: plan.Sites, Plan: plan.Name}
	}
	return nil
}

// domainLimit is the error of one more domain for org (nil: no org), nil
// when its plan allows it.
func (t *tx) domainLimit(org *Org) error {
	if org == nil {
		return nil
	}
	if plan := t.Plans.Get(org.Plan); plan != nil && plan.Domains > 0 && t.domainCountOfOrg(org.ID) >= plan.Domains {
		return &LimitError{Limit: "domains", Max: plan.Domains, Plan: plan.Name}
	}
	return nil
}

// addToIndex adds v to the set under k (a new version of it: the old one
// may be shared with other snapshots). It returns the entries copied.
func addToIndex(x *edit[set], k, v string) (copied int) {
	next, copied := x.Get(k).with(v)
	x.set(k, next)
	return copied
}

// removeFromIndex removes v from the set under k. It returns the entries
// copied.
func removeFromIndex(x *edit[set], k, v string) (copied int) {
	next, copied := x.Get(k).without(v)
	if next.Len() == 0 {
		x.del(k)
	} else {
		x.set(k, next)
	}
	return copied
}

// copied is the number of entries the write copied so far: its cost,
// which depends on what it touches, not on the registry's size.
func (t *tx) copied() int {
	return t.indexCopied + t.Plans.copied() + t.Orgs.copied() + t.Sites.copied() + t.Domains.copied() +
		t.owners.copied() + t.sitesByOrg.copied() + t.domainsBySite.copied()
}
