package sites

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ReservedName is one of tollgate's own hostnames, which no site may take:
// routing prefers an attached domain, so a site holding it would receive
// tollgate's traffic (a Gitea owner's pages, the Stripe webhook).
type ReservedName struct {
	// Name is the hostname; Reserve normalizes it.
	Name string
	// Subdomains reserves every name under Name too (the pages domain:
	// each {owner}.{pages_domain} is a Gitea owner's).
	Subdomains bool
	// Key is the config key that makes the name tollgate's, quoted in the
	// error ("sites.pages_domain").
	Key string
}

// reservedSet is what Reserve built. Immutable.
type reservedSet struct {
	exact map[string]string // name → key
	zones map[string]string // name whose subdomains are reserved too → key
}

// match returns the error for host (normalized) when it is reserved.
func (rs *reservedSet) match(host string) error {
	if rs == nil {
		return nil
	}
	if key, ok := rs.exact[host]; ok {
		return fmt.Errorf("domain %q is tollgate's own (%s): %w", host, key, ErrReserved)
	}
	for zone := host; ; {
		if key, ok := rs.zones[zone]; ok {
			if zone == host {
				return fmt.Errorf("domain %q is tollgate's own (%s): %w", host, key, ErrReserved)
			}
			return fmt.Errorf("domain %q is under %q, tollgate's own (%s): %w", host, zone, key, ErrReserved)
		}
		i := strings.IndexByte(zone, '.')
		if i < 0 {
			return nil
		}
		zone = zone[i+1:]
	}
}

// Reserve sets tollgate's own hostnames, replacing those of an earlier
// call. From then on AttachDomain and AttachDomainVia refuse them with
// ErrReserved, and the Gitea source's ClaimDomains neither attaches nor
// keeps them. Entries with an empty Name are skipped; a name that does not
// normalize is an error and changes nothing. It returns the attached domains that are now
// reserved, sorted (attached before the call): they stay attached until an
// operator detaches them, so the caller should report them. Call it at
// start, before the admin API and the domain claims run.
func (r *Registry) Reserve(names ...ReservedName) (attached []string, err error) {
	rs := &reservedSet{exact: map[string]string{}, zones: map[string]string{}}
	var errs []error
	for _, n := range names {
		if n.Name == "" {
			continue
		}
		host, err := NormalizeDomain(n.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Key, err))
			continue
		}
		if n.Subdomains {
			rs.zones[host] = n.Key
		} else {
			rs.exact[host] = n.Key
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r.reserved.Store(rs)
	for name := range r.Snapshot().Domains.All() {
		if rs.match(name) != nil {
			attached = append(attached, name)
		}
	}
	slices.Sort(attached)
	return attached, nil
}

// CheckReserved returns an error wrapping ErrReserved when host
// (normalized) is one of tollgate's own names, nil otherwise.
func (r *Registry) CheckReserved(host string) error { return r.reserved.Load().match(host) }
