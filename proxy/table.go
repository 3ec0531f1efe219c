package proxy

import (
	"time"

	"github.com/tollgate-edge/tollgate/internal/cowmap"
	"github.com/tollgate-edge/tollgate/sites"
)

// table maps routing keys (normalized hostnames) to the routes built so
// far. Routes are built on a host's first request (lookup), not for every
// domain of the registry: a node of a million sites holds a route, a
// site's open resources, its usage counters and its org's gate only for
// the hosts asked for. The table's versions share structure (cowmap): a
// route added or a registry change costs what it touches.
type table struct {
	hosts cowmap.Map[*route]
}

// lookup returns the route of the host key, building it on the host's first
// request. A host that is no verified domain of the registry gets nil
// without a lock and without allocating; a cached route costs one map
// look-up.
func (p *Proxy) lookup(key []byte) *route {
	if r := p.table.Load().hosts.GetBytes(key); r != nil {
		return r
	}
	s := p.snap.Load()
	if s == nil {
		return nil
	}
	if d := s.Domains.GetBytes(key); d == nil || d.Status != sites.DomainVerified {
		return nil
	}
	return p.fill(string(key))
}

// fill builds and stores the route of the domain name from the current
// snapshot, opening its site's resources if they are not open. It holds
// p.mu, as apply does: a route is never built from a snapshot older than
// the last one applied.
func (p *Proxy) fill(name string) *route {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.table.Load()
	if r := t.hosts.Get(name); r != nil || p.closed {
		return r // built meanwhile, or shut down
	}
	r := p.buildRoute(p.snap.Load(), name)
	if r == nil {
		return nil
	}
	e := t.hosts.Edit()
	e.Set(name, r)
	p.table.Store(&table{hosts: e.Map()})
	return r
}

// apply follows a new registry snapshot. The routes of the hosts d touched
// (its domains, the domains of its sites and of its orgs' sites) are
// dropped, to be built again from s on their next request; the open
// resources of a site d changed are closed when its source changed, and
// those of sites that could not be opened are dropped at every change, so
// the next request tries again. A nil d (the first snapshot, a full
// reload) drops every route and every resource whose site changed.
func (p *Proxy) apply(s *sites.Snapshot, d *sites.Delta) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.snap.Store(s)
	switch {
	case d == nil || len(d.Plans) > 0:
		p.orgRates.update(s, nil, true)
	case len(d.Orgs) > 0:
		p.orgRates.update(s, d.Orgs, false)
	}
	if d == nil || len(d.Orgs) > 0 {
		p.owners.Store(newOwnerCache()) // org attributions may have changed
	}
	if d == nil {
		for id := range p.runtime {
			p.release(id, s.Sites.Get(id))
		}
		p.table.Store(&table{})
		return
	}
	siteIDs := make(map[string]bool, len(d.Sites)+len(p.failed))
	for _, id := range d.Sites {
		siteIDs[id] = true
		p.release(id, s.Sites.Get(id))
	}
	for id := range p.failed {
		siteIDs[id] = true
		p.release(id, s.Sites.Get(id))
	}
	for _, org := range d.Orgs {
		for _, id := range s.SitesOf(org) {
			siteIDs[id] = true
		}
	}
	t := p.table.Load()
	if t.hosts.Len() == 0 {
		return // nothing built yet
	}
	hosts := t.hosts.Edit()
	for _, name := range d.Domains {
		hosts.Delete(name)
	}
	for id := range siteIDs {
		for _, name := range s.DomainsOf(id) {
			hosts.Delete(name)
		}
	}
	p.table.Store(&table{hosts: hosts.Map()})
}

// release closes the open resources of site id unless site (nil: deleted)
// still has the same source and they opened without error. p.mu is held.
func (p *Proxy) release(id string, site *sites.Site) {
	rt := p.runtime[id]
	if rt == nil || site != nil && rt.source == site.Source && rt.err == nil {
		return
	}
	rt.close()
	delete(p.runtime, id)
	delete(p.failed, id)
}

// runtimeOf returns the open resources of site, opening them on first use.
// p.mu is held.
func (p *Proxy) runtimeOf(site *sites.Site) *siteRuntime {
	if rt := p.runtime[site.ID]; rt != nil {
		return rt
	}
	rt := p.open(site)
	p.runtime[site.ID] = rt
	if rt.err != nil {
		p.failed[site.ID] = true
	}
	return rt
}

// buildRoute is the route of the domain name in s, nil when name is not a
// verified domain of a site. p.mu is held.
func (p *Proxy) buildRoute(s *sites.Snapshot, name string) *route {
	d := s.Domains.Get(name)
	if d == nil || d.Status != sites.DomainVerified {
		return nil
	}
	site := s.Sites.Get(d.Site)
	if site == nil {
		return nil
	}
	rt := p.runtimeOf(site)
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
	r.rate, r.rateScope = p.orgRates.get(s, site.Org), p.rateKeys.String(site.ID)
	return r
}
