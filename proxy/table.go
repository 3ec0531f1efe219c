package proxy

import (
	"time"

	"github.com/tollgate-edge/tollgate/internal/cowmap"
	"github.com/tollgate-edge/tollgate/sites"
)

// table maps routing keys (normalized hostnames) to sites. Its versions
// share structure (cowmap): a registry change rewrites the routes it
// touches, not the table.
type table struct {
	hosts cowmap.Map[*route]
}

// apply follows a new registry snapshot: the sites d changed get their
// open resources reopened or closed (a site whose source did not change
// keeps its own), and the routes of the hosts d touched are rebuilt: its
// domains, the domains of its sites and of its orgs' sites. A nil d (the
// first snapshot, a full reload) rebuilds everything.
func (p *Proxy) apply(s *sites.Snapshot, d *sites.Delta) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.snap.Store(s)
	if d == nil {
		p.applyAll(s)
		return
	}
	if len(d.Orgs) > 0 {
		p.owners.Store(newOwnerCache()) // org attributions may have changed
	}
	siteIDs := make(map[string]bool, len(d.Sites))
	for _, id := range d.Sites {
		siteIDs[id] = true
		p.reopen(id, s.Sites.Get(id))
	}
	for id := range p.failed { // sources that could not be opened: tried again at every change
		if !siteIDs[id] {
			siteIDs[id] = true
			p.reopen(id, s.Sites.Get(id))
		}
	}
	for _, org := range d.Orgs {
		for _, id := range s.SitesOf(org) {
			siteIDs[id] = true
		}
	}
	hosts := p.table.Load().hosts.Edit()
	for _, name := range d.Domains {
		p.setRoute(hosts, s, name)
	}
	for id := range siteIDs {
		for _, name := range s.DomainsOf(id) {
			p.setRoute(hosts, s, name)
		}
	}
	p.table.Store(&table{hosts: hosts.Map()})
}

// applyAll rebuilds every site's resources and route from s.
func (p *Proxy) applyAll(s *sites.Snapshot) {
	p.owners.Store(newOwnerCache())
	for id := range p.runtime {
		if s.Sites.Get(id) == nil {
			p.reopen(id, nil)
		}
	}
	for id, site := range s.Sites.All() {
		p.reopen(id, site)
	}
	hosts := cowmap.Map[*route]{}.Edit()
	for name := range s.Domains.All() {
		p.setRoute(hosts, s, name)
	}
	p.table.Store(&table{hosts: hosts.Map()})
}

// reopen gives site id the resources of site (nil: deleted), keeping the
// open ones when its source did not change. p.mu is held.
func (p *Proxy) reopen(id string, site *sites.Site) {
	rt := p.runtime[id]
	if site != nil && rt != nil && rt.source == site.Source && rt.err == nil {
		return
	}
	if rt != nil {
		rt.close()
		delete(p.runtime, id)
		delete(p.failed, id)
	}
	if site != nil {
		rt = p.open(site)
		p.runtime[id] = rt
		if rt.err != nil {
			p.failed[id] = true
		}
	}
}

// setRoute sets the route of the domain name from s in hosts, or removes it
// when name is not a verified domain of a site. p.mu is held.
func (p *Proxy) setRoute(hosts *cowmap.Editor[*route], s *sites.Snapshot, name string) {
	d := s.Domains.Get(name)
	var site *sites.Site
	if d != nil && d.Status == sites.DomainVerified {
		site = s.Sites.Get(d.Site)
	}
	rt := (*siteRuntime)(nil)
	if site != nil {
		rt = p.runtime[site.ID]
	}
	if rt == nil {
		hosts.Delete(name)
		return
	}
	r := &route{site: site, org: s.Orgs.Get(site.Org), rt: rt}
	if h := site.HSTS; h != nil {
		r.hsts = hstsValue(time.Duration(h.MaxAge), h.IncludeSubdomains, h.Preload)
	}
	if p.usage != nil {
		r.usage = p.usage.Counters(site.Org, site.ID, kindNames[rt.kind])
	}
	if p.gates != nil {
		r.gate = p.gates.Gate(site.Org)
	}
	hosts.Set(name, r)
}
