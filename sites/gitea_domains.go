package sites

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// PagesSiteID is the registry site of a pages repository that serves
// custom domains: "gitea-{owner}-{repo}", in the id alphabet, at most 63
// characters.
func PagesSiteID(owner, repo string) string {
	var b strings.Builder
	b.WriteString("gitea-" + owner + "-")
	for _, c := range strings.ToLower(repo) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	id := b.String()
	if len(id) > 63 {
		id = id[:63]
	}
	return strings.TrimRight(id, "-")
}

// declaredDomains returns the served commit's .domains (read once per
// commit).
func (r *GiteaRepo) declaredDomains(ctx context.Context) ([]string, error) {
	st, err := r.current()
	if err != nil || st.missing || st.extra == nil {
		return nil, err
	}
	x := st.extra
	x.sizeMu.Lock()
	defer x.sizeMu.Unlock()
	if x.domainsRead {
		return x.domains, nil
	}
	f, err := r.fetch(ctx, st.commit, ".domains")
	switch {
	case errors.Is(err, ErrFileNotFound):
	case err != nil:
		return nil, err
	case f.Body == nil:
		r.g.log(fmt.Errorf(".domains: over %d bytes: ignored", r.g.cache.cfg.MaxCachedFile), r.Name())
	default:
		domains, perr := ParseDomains(f.Body)
		if perr != nil {
			r.g.log(perr, r.Name())
		}
		x.domains = domains
	}
	x.domainsRead = true
	return x.domains, nil
}

// ClaimDomains gives a repository the custom domains its .domains file
// declares and DNS proves (a CNAME to {owner}.{pages_domain} or
// {repo}.{owner}.{pages_domain}, or a TXT record at _tollgate.{domain} naming
// "owner/repo"): each is attached, as verified, to the repository's
// registry site (PagesSiteID, created on first need in the org paying for
// the owner, within its plan's limits). Domains it no longer declares, and
// tollgate's own names (Registry.Reserve), are detached. A domain another
// site holds is left alone. Safe to call often:
// .domains is read once per commit and DNS answers are cached.
//
// Only the published branch claims domains (the pages rule of the user
// site, the pages branch of a project): the same repository seen at another
// branch through /{repo}/@{branch}/ shares the registry site and must not
// undo its claims.
func (g *Gitea) ClaimDomains(ctx context.Context, reg *Registry, v *DNSVerifier, r *GiteaRepo, pagesDomain, plan string) error {
	if r.branch != "" && r.branch != g.cfg.PagesBranch {
		return nil
	}
	declared, err := r.declaredDomains(ctx)
	if err != nil {
		return err
	}
	siteID := PagesSiteID(r.owner, r.repo)
	snap := reg.Snapshot()
	want := map[string]bool{}
	var errs []error
	for _, d := range declared {
		// Before any DNS query. A reserved name is not wanted, so a claim
		// made before it was reserved is detached below.
		if err := reg.checkReserved(d); err != nil {
			errs = append(errs, err)
			continue
		}
		want[d] = true
	}
	// Detached first, so that their places count for the plan's domain
	// limit in this round's claims.
	for _, name := range snap.DomainsOf(siteID) {
		if dom := snap.Domains[name]; dom != nil && dom.Via != ViaOperator && !want[name] {
			if err := reg.DetachDomain(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
		}
	}
	for _, d := range declared {
		if !want[d] {
			continue
		}
		if cur := snap.Domains[d]; cur != nil {
			if cur.Site != siteID {
				errs = append(errs, fmt.Errorf("%s is already attached to site %s", d, cur.Site))
			}
			continue
		}
		hosts := []string{r.owner + "." + pagesDomain, strings.ToLower(r.repo) + "." + r.owner + "." + pagesDomain}
		via, err := v.Verify(ctx, d, r.owner+"/"+r.repo, hosts...)
		if err != nil || via == "" {
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: dns: %w", d, err))
			}
			continue // not proven (yet): asked again once the DNS answer expires
		}
		if err := g.ensurePagesSite(ctx, reg, r, siteID, plan); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d, err))
			continue
		}
		var limit *LimitError
		if _, err := reg.AttachDomainVia(ctx, siteID, d, via); err != nil && (!errors.Is(err, ErrConflict) || errors.As(err, &limit)) {
			errs = append(errs, fmt.Errorf("%s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

func (g *Gitea) ensurePagesSite(ctx context.Context, reg *Registry, r *GiteaRepo, siteID, plan string) error {
	if reg.Snapshot().Sites[siteID] != nil {
		return nil
	}
	if err := reg.EnsureGiteaOrg(ctx, r.owner, plan); err != nil {
		return err
	}
	org := reg.Snapshot().OrgForGiteaOwner(r.owner)
	_, err := reg.CreateSite(ctx, Site{ID: siteID, Org: org, Source: Source{Type: SourceGitea, Owner: r.owner, Repo: r.repo, Branch: r.branch}})
	if errors.Is(err, ErrConflict) && reg.Snapshot().Sites[siteID] != nil {
		return nil // created meanwhile
	}
	return err
}
