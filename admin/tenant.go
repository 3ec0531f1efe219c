package admin

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/tollgate-edge/tollgate/sites"
)

// What the routes answer differently to a tenant: the plans it may see,
// the sources it may create sites from, the domains it attaches (pending
// until DNS proves them) and the DNS records that prove them.

// DomainProof checks the DNS proof of a domain. *gitea.DNSVerifier
// implements it.
type DomainProof interface {
	// Verify returns how domain is proven to belong to the site named
	// siteName (a TXT record at _tollgate.{domain} naming it, or a CNAME
	// to one of pagesHosts), or "" when it is not.
	Verify(ctx context.Context, domain, siteName string, pagesHosts ...string) (string, error)
}

type (
	// DNSRecord is one record to create at the domain's DNS provider.
	DNSRecord struct {
		Type  string `json:"type"`
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	// DomainDetail is a domain with the DNS records that prove it: a
	// domain a tenant attaches is "pending" until they exist (GET
	// /v1/domains/{domain} checks them), then "verified", routed and given
	// a certificate.
	DomainDetail struct {
		sites.Domain
		DNSRecords []DNSRecord `json:"dns_records"`
	}
	// SiteList is GET /v1/orgs/{id}/sites, by id.
	SiteList struct {
		Sites []SiteDetail `json:"sites"`
	}
)

// proofRecords are the DNS records that prove d: a TXT record at
// _tollgate.{domain} whose text is the site's id, what DomainProof
// accepts for a site of the registry.
func proofRecords(d sites.Domain) []DNSRecord {
	return []DNSRecord{{Type: "TXT", Name: "_tollgate." + d.Name, Value: d.Site}}
}

func domainDetail(d sites.Domain) DomainDetail {
	return DomainDetail{Domain: d, DNSRecords: proofRecords(d)}
}

// prove marks a pending domain verified when its DNS proof exists. A DNS
// failure leaves it pending: the next read asks again.
func (s *Server) prove(ctx context.Context, d sites.Domain) sites.Domain {
	if d.Status != sites.DomainPending || s.domainProof == nil {
		return d
	}
	via, err := s.domainProof.Verify(ctx, d.Name, d.Site)
	if err != nil || via == "" {
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelInfo, "admin: domain proof not checked", slog.String("domain", d.Name), slog.Any("err", err))
		}
		return d
	}
	v, err := s.reg.VerifyDomain(ctx, d.Name, via)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "admin: verifying a proven domain", slog.String("domain", d.Name), slog.Any("err", err))
		return d
	}
	return v
}

// listSites answers the org's sites with their domains, from one snapshot.
func (s *Server) listSites(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	snap := s.reg.Snapshot()
	if snap.Orgs.Get(id) == nil {
		return fmt.Errorf("org %q: %w", id, sites.ErrNotFound)
	}
	out := SiteList{Sites: []SiteDetail{}}
	for _, sid := range snap.SitesOf(id) {
		st := snap.Sites.Get(sid)
		if st == nil {
			continue
		}
		d := SiteDetail{Site: *st, Domains: nonNil(snap.DomainsOf(sid))}
		if s.storage != nil {
			d.StorageBytes = s.storage.Storage(id, sid)
		}
		out.Sites = append(out.Sites, d)
	}
	slices.SortFunc(out.Sites, func(a, b SiteDetail) int { return cmp.Compare(a.ID, b.ID) })
	writeJSON(w, http.StatusOK, out)
	return nil
}

// tenantSource refuses the sources a tenant may not serve from: a
// directory of the operator's machine, a Gitea repository of an owner its
// org does not pay for, and an upstream that is not https:// to a host
// name (an IP literal or localhost would reach the operator's network).
func tenantSource(src sites.Source, org string, snap *sites.Snapshot) error {
	switch src.Type {
	case sites.SourceUpstream:
		u, err := url.Parse(src.URL)
		if err != nil || u.Scheme != "https" {
			return fmt.Errorf("%w: source.url: an org token creates https:// upstreams only", sites.ErrInvalid)
		}
		host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost") || !strings.Contains(host, ".") {
			return fmt.Errorf("%w: source.url: %q must be a public host name", sites.ErrInvalid, u.Hostname())
		}
		return nil
	case sites.SourceGitea:
		if snap.OrgForGiteaOwner(strings.ToLower(src.Owner)) != org {
			return fmt.Errorf("%w: source.owner: %q is not a Gitea owner of org %q", sites.ErrInvalid, src.Owner, org)
		}
		return nil
	default:
		return fmt.Errorf("%w: source.type: an org token creates upstream and gitea sites only", sites.ErrInvalid)
	}
}

// planVisible reports whether the caller of r may see p: the operator
// every plan, a tenant the public ones and its org's, anyone else the
// public ones.
func (s *Server) planVisible(r *http.Request, p *sites.Plan) bool {
	if c := callerOf(r); c != nil && c.operator {
		return true
	}
	if p.Public {
		return true
	}
	if t := tenantOf(r); t != nil {
		o := s.reg.Snapshot().Orgs.Get(t.Org)
		return o != nil && o.Plan == p.Name
	}
	return false
}
