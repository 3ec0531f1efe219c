package proxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/valyala/fasthttp"
)

// Pages hands out Gitea repositories as content sources. *gitea.Source
// implements it.
type Pages interface {
	// Repo is owner/repo at branch ("": the pages branch, else the default).
	Repo(owner, repo, branch string) *gitea.Repo
	// ProjectRepo is owner/repo at the configured pages branch.
	ProjectRepo(owner, repo string) *gitea.Repo
	// KnownOwner reports whether a Gitea owner exists, from memory when it
	// can; gitea.ErrOwnerLookupLimited when it could not be asked now.
	KnownOwner(owner string) (bool, error)
}

// giteaBreaker tells the state of the circuit breaker in front of Gitea.
// *gitea.Source implements it.
type giteaBreaker interface {
	Breaker() gitea.BreakerStats
}

// registerGiteaMetrics exports the breaker of pages, when it has one.
func registerGiteaMetrics(reg prometheus.Registerer, pages Pages) {
	b, ok := pages.(giteaBreaker)
	if !ok {
		return
	}
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_gitea_breaker_state",
		Help: "Circuit breaker in front of sites.gitea_url: 0 closed (calls go to Gitea), 1 half-open (the background probe is out; calls fail fast), 2 open (calls fail fast: 503 with Retry-After).",
	}, func() float64 { return float64(b.Breaker().State) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "tollgate_gitea_breaker_trips_total",
		Help: "Times the Gitea circuit breaker opened: a call timed out, could not connect, or got 502/503/504.",
	}, func() float64 { return float64(b.Breaker().Trips) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "tollgate_gitea_breaker_rejected_total",
		Help: "Gitea calls the open circuit breaker failed fast instead of sending.",
	}, func() float64 { return float64(b.Breaker().Rejected) })
}

// retryAfterGiteaDown is Retry-After of an answer failed fast by the Gitea
// circuit breaker: its probe goes out within gitea.BreakerRetry.
var retryAfterGiteaDown = []byte(strconv.Itoa(int((gitea.BreakerRetry + time.Second - 1) / time.Second)))

// giteaUnavailable answers a request that needed Gitea when Gitea could not
// be asked: 503 with Retry-After while the circuit breaker fails calls fast
// (not logged per request: tollgate_gitea_breaker_state tells), 502 after a
// call that failed.
func (p *Proxy) giteaUnavailable(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, gitea.ErrDown) {
		ctx.Response.Header.SetBytesKV(headerRetryAfter, retryAfterGiteaDown)
		p.errPages.writeError(ctx, fasthttp.StatusServiceUnavailable)
		return
	}
	p.log.Warn("gitea unavailable", slog.Any("err", err))
	p.errPages.writeError(ctx, fasthttp.StatusBadGateway)
}

// giteaStatus is the status of a failed Gitea look-up on the request path:
// 503 while the circuit breaker fails calls fast, else 502.
func giteaStatus(err error) int {
	if errors.Is(err, gitea.ErrDown) {
		return fasthttp.StatusServiceUnavailable
	}
	return fasthttp.StatusBadGateway
}

// OrgMaker creates the synthetic org of a Gitea owner. *sites.Registry
// implements it.
type OrgMaker interface {
	EnsureGiteaOrg(ctx context.Context, owner, plan string) error
}

// pagesOwner returns the owner label of a host under the pages domain
// ("alice" for alice.pages.example), or false.
func pagesOwner(host []byte, suffix string) ([]byte, bool) {
	if len(host) <= len(suffix) || string(host[len(host)-len(suffix):]) != suffix {
		return nil, false
	}
	owner := host[:len(host)-len(suffix)]
	if bytes.IndexByte(owner, '.') >= 0 {
		return nil, false
	}
	return owner, true
}

// ownerCache remembers, per Gitea owner that exists, the org that pays and
// the counters of each repository served, so the request path builds no
// strings. It is replaced (emptied) with every registry snapshot.
type ownerCache struct {
	mu sync.RWMutex
	m  map[string]*pagesOwnerState
}

func newOwnerCache() *ownerCache { return &ownerCache{m: map[string]*pagesOwnerState{}} }

// maxOwners bounds the cache of owners that exist; past it, it starts over.
const maxOwners = 100_000

// retryAfterOwnerLookup is Retry-After of a pages host answered 503
// because owner look-ups are over their rate: tokens return every second.
var retryAfterOwnerLookup = []byte("1")

type pagesOwnerState struct {
	name     string
	orgID    string
	gate     *access.Gate // nil without billing, or while the org is not in the registry
	rate     *orgRate     // nil while the org is not in the registry
	ensured  atomic.Bool
	pages    *gitea.Repo // {owner}/pages, the user site
	mu       sync.Mutex
	counters map[*gitea.Repo]*meter.Counters
	projects map[string]*gitea.Repo // first path segment -> {owner}/{segment} at the pages branch
}

// maxProjects bounds an owner's remembered first path segments.
const maxProjects = 1000

// project returns {owner}/{name} at the pages branch without building a
// string once it is known.
func (o *pagesOwnerState) project(p Pages, name []byte) *gitea.Repo {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.projects[string(name)]; r != nil {
		return r
	}
	r := p.ProjectRepo(o.name, string(name))
	if len(o.projects) >= maxProjects {
		clear(o.projects)
	}
	o.projects[string(name)] = r
	return r
}

// pagesOwnerState returns the state of an owner that exists: an org in
// the registry pays for it, or Gitea knows it (gitea.Source.KnownOwner:
// remembered, or looked up within the global owner look-up rate). The
// cheap checks come first; an invented owner gets no state, no gate and no
// repository entry. status is non-zero when there is no state: 404 (no
// such owner), 503 (owner look-ups are over their rate, or the Gitea
// circuit breaker is open), 502 (Gitea unreachable).
func (p *Proxy) pagesOwnerState(owner []byte) (*pagesOwnerState, int) {
	c := p.owners.Load() // before the snapshot: a state built from an older snapshot lands in a cache that is dropped
	c.mu.RLock()
	st := c.m[string(owner)]
	c.mu.RUnlock()
	if st != nil {
		return st, 0
	}
	snap := p.snap.Load()
	// A string, not owner itself: a slice passed to an interface method
	// escapes, and with it the caller's host buffer on every request.
	name := string(owner)
	if !snap.OwnerHasOrg(owner) {
		ok, err := p.pages.KnownOwner(name)
		switch {
		case errors.Is(err, gitea.ErrOwnerLookupLimited):
			return nil, fasthttp.StatusServiceUnavailable
		case err != nil:
			return nil, giteaStatus(err)
		case !ok:
			return nil, fasthttp.StatusNotFound
		}
	}
	st = &pagesOwnerState{name: name, orgID: snap.OrgForGiteaOwner(name), pages: p.pages.Repo(name, "pages", ""),
		counters: map[*gitea.Repo]*meter.Counters{}, projects: map[string]*gitea.Repo{}}
	// Gates exist for orgs in the registry only; an owner whose org is
	// not created yet is enforced by its state once it is (the new
	// snapshot empties this cache).
	if snap.Orgs.Get(st.orgID) != nil {
		if p.gates != nil {
			st.gate = p.gates.Gate(st.orgID)
		}
		st.rate = p.orgRates.get(snap, st.orgID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.m[name]; cur != nil {
		return cur, 0
	}
	if len(c.m) >= maxOwners {
		c.m = map[string]*pagesOwnerState{}
	}
	c.m[name] = st
	return st, 0
}

func (o *pagesOwnerState) usage(u Usage, repo *gitea.Repo) *meter.Counters {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.counters[repo]
	if c == nil {
		c = u.Counters(o.orgID, repo.Name(), kindNames[kindGitea])
		o.counters[repo] = c
	}
	return c
}

// servePages serves a pages target: the repository's file, after making
// sure, once per owner, that the registry has the owner's org.
func (p *Proxy) servePages(ctx *fasthttp.RequestCtx, t *target) {
	o := t.owner
	if t.ensure && !o.ensured.Load() && o.ensured.CompareAndSwap(false, true) {
		// Every byte has an org from the first request: the counters already
		// carry its id; the registry entry follows in the background, for
		// an owner with a repository Gitea serves (not while Gitea is down).
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.orgs.EnsureGiteaOrg(ctx, o.name, p.plan); err != nil {
				o.ensured.Store(false)
				p.log.Error("creating the org of a gitea owner", slog.String("owner", o.name), slog.Any("err", err))
			}
		}()
	}
	p.serveStatic(ctx, t.repo, t.inner)
}

// routePages picks the repository for urlPath and the path inside it, with
// the URL scheme Codeberg Pages users know:
//
//	/…                → repository {owner}/pages (its pages branch, else its default branch)
//	/{repo}/…         → {owner}/{repo}, branch pages, when it exists; else /{repo}/… of {owner}/pages
//	/{repo}/@{branch}/… → {owner}/{repo} at that branch
//	/{repo}           → redirect to /{repo}/ (slash)
//
// status is non-zero for an answer without content (404, 502, 503 while
// the Gitea circuit breaker is open). Repositories already looked up are
// answered from memory (gitea.Repo.Exists).
func (p *Proxy) routePages(o *pagesOwnerState, urlPath []byte) (repo *gitea.Repo, inner []byte, slash bool, status int) {
	first, rest := splitFirst(urlPath)
	if len(first) > 0 && sites.ValidRepoNameBytes(first) {
		if branch, after, ok := branchSegment(rest); ok {
			if !sites.ValidBranchName(branch) {
				return nil, nil, false, fasthttp.StatusNotFound
			}
			r := p.pages.Repo(o.name, string(first), branch)
			ok, err := r.Exists()
			switch {
			case err != nil:
				return nil, nil, false, giteaStatus(err)
			case !ok:
				return nil, nil, false, fasthttp.StatusNotFound
			case len(after) == 0:
				return nil, nil, true, 0
			}
			return r, after, false, 0
		}
		r := o.project(p.pages, first)
		if ok, err := r.Exists(); err != nil && !errors.Is(err, content.ErrFileNotFound) {
			return nil, nil, false, giteaStatus(err)
		} else if ok {
			if len(rest) == 0 {
				return nil, nil, true, 0
			}
			return r, rest, false, 0
		}
	}
	return o.pages, urlPath, false, 0
}

// splitFirst splits "/a/b/c" into "a" and "/b/c" ("/a" gives "a" and "").
func splitFirst(p []byte) ([]byte, []byte) {
	if len(p) == 0 || p[0] != '/' {
		return nil, p
	}
	p = p[1:]
	if i := bytes.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i:]
	}
	return p, nil
}

// branchSegment reads "/@branch/…" off rest.
func branchSegment(rest []byte) (branch string, after []byte, ok bool) {
	if len(rest) < 3 || rest[1] != '@' {
		return "", nil, false
	}
	seg, after := splitFirst(rest)
	return string(seg[1:]), after, true
}
