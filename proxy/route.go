package proxy

import (
	"bytes"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/valyala/fasthttp"
)

// What a routed request is for (target.to).
const (
	toSite      = iota + 1 // a site in the table: dir, upstream or gitea
	toPages                // a repository under {owner}.{pages_domain}
	toSlash                // a pages repository asked for without its slash: 301
	toInternal             // one of tollgate's own endpoints (Options.Internal)
	toRedirect             // the redirect listener: 308 to the same URL over HTTPS
	toChallenge            // the redirect listener: an ACME HTTP-01 challenge
)

// target is route's answer: what the request is for, who pays for it and
// what the enforce, charge and serve steps read. It holds no bytes of the
// request's host.
type target struct {
	to   int // toSite, toPages, …
	kind int // the site kind it is measured as (kindNone, kindDir, …)
	// enforce: the org's decision applies (a nil org is then 403); false
	// for tollgate's own answers and for a pages owner whose org is not in
	// the registry yet.
	enforce bool
	org     *sites.Org
	gate    *access.Gate // nil without billing
	rate    *orgRate     // the org's request-rate limit; nil: none
	site    *route       // toSite; toRedirect for a site's host
	// toPages: the owner, the repository and the path inside it; ensure
	// when Gitea serves the repository, so the owner's org may be created.
	owner  *pagesOwnerState
	repo   *gitea.Repo
	inner  []byte
	ensure bool
	// internal is the endpoint of toInternal.
	internal *InternalRoute
	// retryAfter is the Retry-After of a refusal; nil: none.
	retryAfter []byte
}

// route decides what a request is for, from its Host (normalized into
// buf, returned as key) and path: a site in the table, tollgate's own
// endpoint, a pages owner's repository. status is non-zero when the answer
// is that error page: 400 (a Host that is no hostname), 421 (over TLS, a
// Host the connection's certificate was not chosen for), 404, and for
// pages hosts 502 or 503 (Gitea could not be asked). With redirect (the
// plain-HTTP listener when HTTPS is on) every host the public listeners
// serve routes to toRedirect, decided from the host alone (no Gitea), and
// ACME challenges to toChallenge.
func (p *Proxy) route(ctx *fasthttp.RequestCtx, buf []byte, redirect *RedirectOptions) (t target, key []byte, status int) {
	if redirect != nil && redirect.Challenge != nil && bytes.HasPrefix(ctx.Path(), acmeChallengePath) {
		return target{to: toChallenge}, nil, 0
	}
	key, err := sites.AppendHostKey(buf, ctx.Host())
	if err != nil {
		return target{}, nil, fasthttp.StatusBadRequest
	}
	if p.misdirected(ctx.Conn(), key) {
		return target{}, key, fasthttp.StatusMisdirectedRequest
	}
	if r := p.lookup(key); r != nil {
		if redirect != nil {
			return target{to: toRedirect, kind: r.rt.kind, site: r}, key, 0
		}
		return target{to: toSite, kind: r.rt.kind, site: r, enforce: true, org: r.org, gate: r.gate, rate: r.rate}, key, 0
	}
	owner, pagesHost := pagesOwner(key, p.pagesSuffix)
	pagesHost = pagesHost && p.pagesSuffix != ""
	if redirect != nil {
		if p.internal[string(key)] != nil || pagesHost {
			return target{to: toRedirect}, key, 0
		}
		return target{}, key, fasthttp.StatusNotFound
	}
	if ir := p.internalRoute(ctx, key); ir != nil {
		return target{to: toInternal, internal: ir}, key, 0
	}
	if pagesHost {
		t, status = p.pagesTarget(owner, ctx.Path())
		return t, key, status
	}
	return target{}, key, fasthttp.StatusNotFound
}

// pagesTarget routes a request for {owner}.{pages_domain} to a repository
// (see routePages for the URL scheme). The cheap checks come first: an
// invalid owner, one Gitea does not know, or a repository it does not
// serve is nobody's (no org, no counters: crawlers invent them) and gets
// 404; 503 and 502 when Gitea could not be asked.
func (p *Proxy) pagesTarget(owner, urlPath []byte) (target, int) {
	t := target{to: toPages, kind: kindGitea}
	if !sites.ValidGiteaOwnerBytes(owner) {
		return t, fasthttp.StatusNotFound
	}
	o, status := p.pagesOwnerState(owner)
	if status != 0 {
		if status == fasthttp.StatusServiceUnavailable {
			t.retryAfter = retryAfterOwnerLookup // both causes are over within a second
		}
		return t, status
	}
	repo, inner, slash, status := p.routePages(o, urlPath)
	switch {
	case slash:
		t.to = toSlash // /{repo} -> /{repo}/, as for a directory
		return t, 0
	case status != 0:
		if status == fasthttp.StatusServiceUnavailable {
			t.retryAfter = retryAfterGiteaDown
		}
		return t, status
	}
	// The answer is the cached head look-up that serving needs anyway.
	exists, err := repo.Exists()
	if err == nil && !exists {
		return t, fasthttp.StatusNotFound
	}
	t.owner, t.repo, t.inner, t.ensure = o, repo, inner, exists
	t.org = p.snap.Load().Orgs.Get(o.orgID)
	t.gate, t.rate, t.enforce = o.gate, o.rate, t.org != nil
	return t, 0
}
