package sites

import (
	"maps"
	"slices"
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
