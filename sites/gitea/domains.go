package gitea

// The custom domains a repository declares in its .domains file.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
)

// Limits of a .domains file.
const (
	MaxDomainsBytes = 16 << 10
	MaxDomainsLines = 100
)

// ParseDomains reads a .domains file: one domain a line, '#' comments.
// Invalid names are skipped; the error (nil when all is well) says which.
func ParseDomains(data []byte) ([]string, error) {
	var problems []string
	if len(data) > MaxDomainsBytes {
		problems = append(problems, fmt.Sprintf("file over %d bytes: the rest is ignored", MaxDomainsBytes))
		data = data[:MaxDomainsBytes]
	}
	seen := map[string]bool{}
	var out []string
	for n, line := range strings.Split(string(data), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if len(out) == MaxDomainsLines {
			problems = append(problems, fmt.Sprintf("more than %d domains: the rest is ignored", MaxDomainsLines))
			break
		}
		d, err := sites.NormalizeDomain(line)
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %v", n+1, err))
			continue
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	if len(problems) > 0 {
		return out, fmt.Errorf(".domains: %s", strings.Join(problems, "; "))
	}
	return out, nil
}

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
func (r *Repo) declaredDomains(ctx context.Context) ([]string, error) {
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
	case errors.Is(err, content.ErrFileNotFound):
	case err != nil:
		return nil, err
	case f.Body == nil:
		r.g.log(fmt.Errorf(".domains: over %d bytes: ignored", r.g.cache.MaxFile()), r.Name())
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
func (g *Source) ClaimDomains(ctx context.Context, reg *sites.Registry, v *DNSVerifier, r *Repo, pagesDomain, plan string) error {
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
		if err := reg.CheckReserved(d); err != nil {
			errs = append(errs, err)
			continue
		}
		want[d] = true
	}
	// Detached first, so that their places count for the plan's domain
	// limit in this round's claims.
	for _, name := range snap.DomainsOf(siteID) {
		if dom := snap.Domains.Get(name); dom != nil && dom.Via != sites.ViaOperator && !want[name] {
			if err := reg.DetachDomain(ctx, name); err != nil && !errors.Is(err, sites.ErrNotFound) {
				errs = append(errs, err)
			}
		}
	}
	for _, d := range declared {
		if !want[d] {
			continue
		}
		if cur := snap.Domains.Get(d); cur != nil {
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
		var limit *sites.LimitError
		if _, err := reg.AttachDomainVia(ctx, siteID, d, via); err != nil && (!errors.Is(err, sites.ErrConflict) || errors.As(err, &limit)) {
			errs = append(errs, fmt.Errorf("%s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

func (g *Source) ensurePagesSite(ctx context.Context, reg *sites.Registry, r *Repo, siteID, plan string) error {
	if reg.Snapshot().Sites.Get(siteID) != nil {
		return nil
	}
	if err := reg.EnsureGiteaOrg(ctx, r.owner, plan); err != nil {
		return err
	}
	org := reg.Snapshot().OrgForGiteaOwner(r.owner)
	_, err := reg.CreateSite(ctx, sites.Site{ID: siteID, Org: org, Source: sites.Source{Type: sites.SourceGitea, Owner: r.owner, Repo: r.repo, Branch: r.branch}})
	if errors.Is(err, sites.ErrConflict) && reg.Snapshot().Sites.Get(siteID) != nil {
		return nil // created meanwhile
	}
	return err
}
