package console

// Adding a domain. A tenant proves it controls a domain with DNS before
// the domain is attached: a CNAME to Config.CNAMETarget or a TXT record at
// _tollgate.{domain} whose text is the site's id (the TXT proof the Gitea
// source reads too, at the same name). The registry has no pending state:
// a domain not yet proven is not stored anywhere; its page
// (/console/domains/{domain}?site=ID) shows the records to create and a
// button that checks DNS again, and attaches the domain, verified, once it
// is proven. An operator attaching through the admin API needs no proof.

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tollgate-edge/tollgate/sites"
)

// dnsRecord is one record a tenant creates at its DNS provider.
type dnsRecord struct {
	Type, Name, Value, Purpose string
}

// recordsFor are the records that prove domain belongs to site, and route
// it when Config.CNAMETarget is set.
func (c *Console) recordsFor(domain, site string) []dnsRecord {
	var out []dnsRecord
	if c.cfg.CNAMETarget != "" {
		out = append(out, dnsRecord{"CNAME", domain, c.cfg.CNAMETarget,
			"Routes the domain to us and proves you control it. Not possible at the apex of a zone (example.com): use the TXT record there."})
	}
	return append(out, dnsRecord{"TXT", "_tollgate." + domain, site,
		"Proves you control the domain, wherever it points."})
}

// domainForm reads and checks the site and domain of an add-domain post
// or a domain page: the site must be one of the session's org.
func (c *Console) domainForm(s *session, siteID, name string) (*sites.Snapshot, string, error) {
	snap := c.opts.Registry.Snapshot()
	if st := snap.Sites.Get(siteID); st == nil || st.Org != s.tenant.Org {
		return nil, "", &pageError{status: http.StatusNotFound, msg: "Your org has no such site."}
	}
	host, err := sites.NormalizeDomain(name)
	if err != nil {
		return nil, "", &pageError{status: http.StatusBadRequest, msg: fmt.Sprintf("%q is not a domain name: %v.", name, err)}
	}
	return snap, host, nil
}

// addDomain checks DNS for the posted domain and attaches it to the
// posted site once proven; either way it redirects to the domain's page.
func (c *Console) addDomain(w http.ResponseWriter, r *http.Request, s *session) error {
	if c.opts.Verifier == nil {
		return &pageError{status: http.StatusNotFound, msg: "Adding domains is not available here. Ask the operator."}
	}
	siteID := r.PostFormValue("site")
	snap, host, err := c.domainForm(s, siteID, r.PostFormValue("domain"))
	if err != nil {
		return err
	}
	page := Prefix + "domains/" + url.PathEscape(host) + "?site=" + url.QueryEscape(siteID)
	if cur := snap.Domains.Get(host); cur != nil {
		if cur.Site != siteID {
			return &pageError{status: http.StatusConflict, msg: fmt.Sprintf("%s is already attached to another site.", host)}
		}
		http.Redirect(w, r, page, http.StatusSeeOther)
		return nil
	}
	var targets []string
	if c.cfg.CNAMETarget != "" {
		targets = append(targets, c.cfg.CNAMETarget)
	}
	via, err := c.opts.Verifier.Verify(r.Context(), host, siteID, targets...)
	if err != nil {
		return &pageError{status: http.StatusBadGateway, msg: fmt.Sprintf("DNS could not be asked about %s: %v. Try again in a moment.", host, err)}
	}
	if via != "" {
		if _, err := c.opts.Registry.AttachDomainVia(r.Context(), siteID, host, via); err != nil {
			return attachError(host, err)
		}
	}
	http.Redirect(w, r, page, http.StatusSeeOther)
	return nil
}

// attachError words the registry's refusal of a domain.
func attachError(host string, err error) error {
	var limit *sites.LimitError
	switch {
	case errors.As(err, &limit):
		return &pageError{status: http.StatusConflict, msg: fmt.Sprintf("Your plan %s allows at most %d domains. Upgrade to add more.", limit.Plan, limit.Max)}
	case errors.Is(err, sites.ErrReserved):
		return &pageError{status: http.StatusConflict, msg: fmt.Sprintf("%s is reserved and cannot be attached.", host)}
	case errors.Is(err, sites.ErrConflict):
		return &pageError{status: http.StatusConflict, msg: fmt.Sprintf("%s is already attached to another site.", host)}
	case errors.Is(err, sites.ErrInvalid):
		return &pageError{status: http.StatusBadRequest, msg: fmt.Sprintf("%s cannot be attached: %v.", host, err)}
	}
	return err
}

// domainPage shows a domain's state (attached and verified, or waiting
// for its DNS records) and the records to create. A domain attached to a
// site of another org is not found, as is a site not of the org.
func (c *Console) domainPage(w http.ResponseWriter, r *http.Request, s *session) error {
	name := r.PathValue("domain")
	siteID := r.URL.Query().Get("site")
	snap := c.opts.Registry.Snapshot()
	if host, err := sites.NormalizeDomain(name); err == nil && siteID == "" {
		if d := snap.Domains.Get(host); d != nil {
			siteID = d.Site
		}
	}
	snap, host, err := c.domainForm(s, siteID, name)
	if err != nil {
		return err
	}
	data := map[string]any{"Domain": host, "Site": siteID, "Records": c.recordsFor(host, siteID),
		"CanAdd": s.tenant.Has(ScopeWrite) && c.opts.Verifier != nil}
	switch d := snap.Domains.Get(host); {
	case d == nil:
		data["State"] = "pending"
	case d.Site == siteID:
		data["State"], data["Attached"] = d.Status, d
	default:
		return &pageError{status: http.StatusNotFound, msg: "Your org has no such domain."}
	}
	c.render(w, s, http.StatusOK, "domain", "Sites and domains", data)
	return nil
}
