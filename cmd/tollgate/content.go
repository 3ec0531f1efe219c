package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// startContent builds the content cache and, with [sites] gitea_url, the
// Gitea pages source, whose new commits are held to their org's storage
// quota once billing starts (publishGate). The source keeps the commit a
// repository serves while a newer head is refused in the node's bbolt file,
// also in a cluster: like the decision (each node measures the storage it
// serves) it is this node's. Site tending (tendSites) runs when there is a meter
// to tell what sites store or pages repositories to give custom domains.
func (n *node) startContent(ctx context.Context) error {
	cache := content.NewCache(n.cfg.Sites)
	n.proxy.Cache = cache
	var claim func(context.Context, *gitea.Repo)
	if n.cfg.Sites.GiteaURL != "" {
		n.publish = newPublishGate(n.reg)
		g, err := gitea.New(cache, n.cfg.Sites, gitea.Options{Gate: n.publish, Store: n.st})
		if err != nil {
			return err
		}
		g.Log = func(err error, repo string) {
			n.log.Info("tenant content problem", slog.String("repo", repo), slog.Any("err", err))
		}
		n.gitea = g
		n.proxy.Pages, n.admin.Gitea, n.certs.Owners = g, g, g
		if n.cfg.Sites.PagesDomain != "" {
			n.proxy.PagesDomain, _ = sites.NormalizeDomain(n.cfg.Sites.PagesDomain)
			n.proxy.PagesWildcard = n.cfg.ACME.WildcardCert != ""
			claim = n.domainClaims(g)
		}
	}
	if n.meter == nil && claim == nil {
		return nil
	}
	tend := &loop{run: func(ctx context.Context) {
		tendSites(ctx, n.reg, n.gitea, n.meter, n.cfg.Sites.StorageInterval, claim, n.log)
	}}
	return n.ps.start(ctx, "site tending", tend)
}

// domainClaims gives a pages repository the custom domains its .domains
// file declares and DNS proves. A repository's error is logged when it
// changes, not every round. tendSites calls it from one goroutine.
func (n *node) domainClaims(g *gitea.Source) func(context.Context, *gitea.Repo) {
	dns := gitea.NewDNSVerifier(n.cfg.Sites.DNSResolver, n.cfg.Sites.DNSCache, gitea.DNSOptions{})
	lastErr := map[string]string{} // per repository
	domain, plan := n.proxy.PagesDomain, n.cfg.Billing.DefaultPlan
	return func(ctx context.Context, r *gitea.Repo) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := g.ClaimDomains(cctx, n.reg, dns, r, domain, plan)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != lastErr[r.Name()] && msg != "" {
			n.log.Info("custom domains of a repository", slog.String("repo", r.Name()), slog.Any("err", err))
		}
		lastErr[r.Name()] = msg
	}
}
