// Package gitea serves sites from the repositories of one Gitea instance
// ("pages": {owner}.{pages_domain}).
//
// A repository branch (Repo) is served at its head commit, file by file
// from Gitea's raw endpoint, through the shared content cache and by the
// path rule of every source (content.Resolve). Around it: a circuit breaker
// in front of Gitea, the owners Gitea knows, and the custom domains a
// repository declares in .domains once DNS proves them (ClaimDomains,
// DNSVerifier).
//
// The package is named for the forge it reads; it imports Gitea's SDK as
// sdk.
package gitea

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdk "code.gitea.io/sdk/gitea"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"golang.org/x/sync/singleflight"
)

// ErrUpstream is returned when Gitea could not be asked (down, slow, 5xx) and
// nothing cached can answer: the proxy shows 502.
var ErrUpstream = errors.New("gitea unavailable")

// Source serves sites straight from a Gitea instance's repositories. Content
// is fetched from the raw endpoint at a fixed commit and cached by commit, so
// a push never serves a mix of old and new files; branch heads are rechecked
// in the background every sites.Config.Revalidate, or at once on a push webhook
// (Pushed). A head moves only if Options.Gate allows it (publish.go: a
// commit over the org's storage quota is not published); otherwise the
// served commit stays, also across a restart with Options.Store
// (published.go).
// It is safe for concurrent use.
type Source struct {
	cfg   sites.Config
	cache *content.Cache
	api   *sdk.Client
	hc    *http.Client
	base  string // GiteaURL without a trailing slash
	sf    singleflight.Group

	mu    sync.Mutex
	repos map[string]*Repo // "owner/repo@branch"

	owners *owners // KnownOwner's answers

	gate  PublishGate // Options.Gate; nil: every head is published
	store Store       // Options.Store; nil: refusals are not kept across restarts

	// now is the clock of every expiry decision: branch heads (Revalidate,
	// NegativeTTL, BreakerRetry), remembered misses and owners.
	now func() time.Time

	// breaker fails calls fast while Gitea is down (breaker.go); every
	// call goes through it.
	breaker *breaker

	// contentsExt is set once Gitea has answered a contents-ext call:
	// from then on its 404 means "no such path" (raw.go: isDir).
	contentsExt atomic.Bool

	// Calls counts requests sent to Gitea (API and raw; not those the
	// breaker failed fast), for tests and metrics.
	Calls atomic.Int64
	// Log receives tenant content problems (a bad _redirects line). Nil: none.
	Log func(err error, repo string)
}

func (g *Source) log(err error, repo string) {
	if g.Log != nil {
		g.Log(err, repo)
	}
}

// maxRepos bounds the remembered repositories; past it, those that do not
// exist are forgotten first.
const maxRepos = 100_000

// Options are a Gitea source's collaborators.
type Options struct {
	// Now is the clock (default time.Now) of every expiry decision: when a
	// branch head, a remembered miss or an owner answer is checked again,
	// and the Last-Modified of a raw file Gitea sends without one. Tests
	// inject a clock and advance it past a TTL instead of sleeping.
	Now func() time.Time
	// Gate decides whether a repository moves to a new head commit
	// (publish.go). Nil: every head is published.
	Gate PublishGate
	// Store keeps, per repository, the commit served while the gate
	// refuses a newer head (published.go), so a restart serves the same
	// commit. Nil: a restart forgets refusals, and each repository's first
	// publish after it is not held.
	Store Store
}

// New returns a Gitea source that caches content in c.
func New(c *content.Cache, cfg sites.Config, opts Options) (*Source, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	cfg.Defaults()
	if cfg.GiteaURL == "" {
		return nil, errors.New("sites.gitea_url: required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Source{cfg: cfg, cache: c, base: strings.TrimSuffix(cfg.GiteaURL, "/"), repos: map[string]*Repo{},
		owners: newOwners(cfg.OwnerLookupRate, opts.Now()), now: opts.Now, gate: opts.Gate, store: opts.Store}
	rt := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: cfg.GiteaTimeout}).DialContext,
		ResponseHeaderTimeout: cfg.GiteaTimeout,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
	}
	g.breaker = newBreaker(BreakerRetry, func() outcome { return g.probeGitea(rt) })
	g.hc = &http.Client{Transport: giteaTransport{rt: rt, b: g.breaker, calls: &g.Calls}}
	copts := []sdk.ClientOption{sdk.SetHTTPClient(&http.Client{Transport: g.hc.Transport, Timeout: cfg.GiteaTimeout}),
		sdk.SetGiteaVersion("")}
	if cfg.GiteaToken != "" {
		copts = append(copts, sdk.SetToken(cfg.GiteaToken))
	}
	api, err := sdk.NewClient(g.base, copts...)
	if err != nil {
		return nil, fmt.Errorf("gitea: client: %w", err)
	}
	g.api = api
	return g, nil
}

// Repo returns the source for owner/repo at branch; branch "" follows the
// rule of an owner's "pages" repository: its pages branch if it has one,
// else its default branch.
func (g *Source) Repo(owner, repo, branch string) *Repo {
	key := owner + "/" + repo + "@" + branch
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.repos[key]
	if r == nil {
		if len(g.repos) >= maxRepos {
			g.forgetMissingLocked()
		}
		r = &Repo{g: g, owner: owner, repo: repo, branch: branch}
		g.repos[key] = r
	}
	return r
}

func (g *Source) forgetMissingLocked() {
	for k, r := range g.repos {
		if st := r.state.Load(); st == nil || st.missing {
			delete(g.repos, k)
		}
	}
}

// ProjectRepo is owner/repo at the configured pages branch.
func (g *Source) ProjectRepo(owner, repo string) *Repo {
	return g.Repo(owner, repo, g.cfg.PagesBranch)
}

// Push is what a push webhook says: Branch of Owner/Repo moved to After
// (all zeros when the branch was deleted).
type Push struct {
	Owner, Repo, Branch, After string
}

// Pushed is called by the push webhook. The payload is a hint, not a
// source of truth: the branch head is asked of Gitea and the served commit
// moves to Gitea's answer (if the gate allows it), never to After itself, so a replayed or forged
// (but signed) delivery cannot move a site to another commit. The
// repository at Branch and, for the pages rule, at "" are rechecked, if
// they are served; one that already serves After is not (a replay of the
// latest delivery asks nothing). Each check is bounded by gitea_timeout per
// call; when ctx ends first the check goes on in the background. On error
// the repository is left to be rechecked by its next request, still
// serving its known commit.
func (g *Source) Pushed(ctx context.Context, p Push) error {
	g.mu.Lock()
	targets := []*Repo{g.repos[p.Owner+"/"+p.Repo+"@"+p.Branch], g.repos[p.Owner+"/"+p.Repo+"@"]}
	g.mu.Unlock()
	var errs []error
	for i, r := range targets {
		if r == nil || i == 1 && r == targets[0] {
			continue
		}
		if st := r.state.Load(); st != nil && !st.missing && st.commit == p.After {
			continue
		}
		done := make(chan error, 1)
		go func() {
			_, err := r.refresh()
			if err != nil {
				r.expire()
			}
			done <- err
		}()
		var err error
		select {
		case err = <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rechecking %s: %w", r.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// OwnerExists reports whether a Gitea user or organization named owner
// exists (one API call, bounded by gitea_timeout and ctx; not cached: the
// caller caches). KnownOwner is its cached, rate-limited form.
func (g *Source) OwnerExists(ctx context.Context, owner string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+"/api/v1/users/"+url.PathEscape(owner), nil)
	if err != nil {
		return false, err
	}
	if g.cfg.GiteaToken != "" {
		req.Header.Set("Authorization", "token "+g.cfg.GiteaToken)
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		return false, upstreamError(err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("%w: looking up owner %s: HTTP %d", ErrUpstream, owner, resp.StatusCode)
}

// Known returns the repositories served so far that exist.
func (g *Source) Known() []*Repo {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*Repo
	for _, r := range g.repos {
		if st := r.state.Load(); st != nil && !st.missing {
			out = append(out, r)
		}
	}
	return out
}
