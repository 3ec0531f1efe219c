package sites

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"code.gitea.io/sdk/gitea"
	"golang.org/x/sync/singleflight"
)

// ErrUpstream is returned when Gitea could not be asked (down, slow, 5xx) and
// nothing cached can answer: the proxy shows 502.
var ErrUpstream = errors.New("gitea unavailable")

// Gitea serves sites straight from a Gitea instance's repositories. Content
// is fetched from the raw endpoint at a fixed commit and cached by commit, so
// a push never serves a mix of old and new files; branch heads are rechecked
// in the background every Config.Revalidate, or at once on a push webhook
// (Pushed).
// It is safe for concurrent use.
type Gitea struct {
	cfg   Config
	cache *Cache
	api   *gitea.Client
	hc    *http.Client
	base  string // GiteaURL without a trailing slash
	sf    singleflight.Group

	mu    sync.Mutex
	repos map[string]*GiteaRepo // "owner/repo@branch"

	owners *owners // KnownOwner's answers

	// now is the clock of every expiry decision: branch heads (Revalidate,
	// NegativeTTL, BreakerRetry), remembered misses and owners.
	now func() time.Time

	// breaker fails calls fast while Gitea is down (gitea_breaker.go); every
	// call goes through it.
	breaker *breaker

	// Calls counts requests sent to Gitea (API and raw; not those the
	// breaker failed fast), for tests and metrics.
	Calls atomic.Int64
	// Log receives tenant content problems (a bad _redirects line). Nil: none.
	Log func(err error, repo string)
}

func (g *Gitea) log(err error, repo string) {
	if g.Log != nil {
		g.Log(err, repo)
	}
}

// maxRepos bounds the remembered repositories; past it, those that do not
// exist are forgotten first.
const maxRepos = 100_000

// GiteaOptions are a Gitea source's collaborators.
type GiteaOptions struct {
	// Now is the clock (default time.Now) of every expiry decision: when a
	// branch head, a remembered miss or an owner answer is checked again,
	// and the Last-Modified of a raw file Gitea sends without one. Tests
	// inject a clock and advance it past a TTL instead of sleeping.
	Now func() time.Time
}

// NewGitea returns a Gitea source using c for content.
func (c *Cache) NewGitea(cfg Config, opts GiteaOptions) (*Gitea, error) {
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
	g := &Gitea{cfg: cfg, cache: c, base: strings.TrimSuffix(cfg.GiteaURL, "/"), repos: map[string]*GiteaRepo{},
		owners: newOwners(cfg.OwnerLookupRate, opts.Now()), now: opts.Now}
	rt := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: cfg.GiteaTimeout}).DialContext,
		ResponseHeaderTimeout: cfg.GiteaTimeout,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
	}
	g.breaker = newBreaker(BreakerRetry, func() outcome { return g.probeGitea(rt) })
	g.hc = &http.Client{Transport: giteaTransport{rt: rt, b: g.breaker, calls: &g.Calls}}
	copts := []gitea.ClientOption{gitea.SetHTTPClient(&http.Client{Transport: g.hc.Transport, Timeout: cfg.GiteaTimeout}),
		gitea.SetGiteaVersion("")}
	if cfg.GiteaToken != "" {
		copts = append(copts, gitea.SetToken(cfg.GiteaToken))
	}
	api, err := gitea.NewClient(g.base, copts...)
	if err != nil {
		return nil, fmt.Errorf("sites: gitea client: %w", err)
	}
	g.api = api
	return g, nil
}

// Repo returns the source for owner/repo at branch; branch "" follows the
// rule of an owner's "pages" repository: its pages branch if it has one,
// else its default branch.
func (g *Gitea) Repo(owner, repo, branch string) *GiteaRepo {
	key := owner + "/" + repo + "@" + branch
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.repos[key]
	if r == nil {
		if len(g.repos) >= maxRepos {
			g.forgetMissingLocked()
		}
		r = &GiteaRepo{g: g, owner: owner, repo: repo, branch: branch}
		g.repos[key] = r
	}
	return r
}

func (g *Gitea) forgetMissingLocked() {
	for k, r := range g.repos {
		if st := r.state.Load(); st == nil || st.missing {
			delete(g.repos, k)
		}
	}
}

// ProjectRepo is owner/repo at the configured pages branch.
func (g *Gitea) ProjectRepo(owner, repo string) *GiteaRepo {
	return g.Repo(owner, repo, g.cfg.PagesBranch)
}

// Push is what a push webhook says: Branch of Owner/Repo moved to After
// (all zeros when the branch was deleted).
type Push struct {
	Owner, Repo, Branch, After string
}

// Pushed is called by the push webhook. The payload is a hint, not a
// source of truth: the branch head is asked of Gitea and the served commit
// moves to Gitea's answer, never to After itself, so a replayed or forged
// (but signed) delivery cannot move a site to another commit. The
// repository at Branch and, for the pages rule, at "" are rechecked, if
// they are served; one that already serves After is not (a replay of the
// latest delivery asks nothing). Each check is bounded by gitea_timeout per
// call; when ctx ends first the check goes on in the background. On error
// the repository is left to be rechecked by its next request, still
// serving its known commit.
func (g *Gitea) Pushed(ctx context.Context, p Push) error {
	g.mu.Lock()
	targets := []*GiteaRepo{g.repos[p.Owner+"/"+p.Repo+"@"+p.Branch], g.repos[p.Owner+"/"+p.Repo+"@"]}
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

// GiteaRepo is one repository branch served from Gitea.
type GiteaRepo struct {
	g                   *Gitea
	owner, repo, branch string
	state               atomic.Pointer[repoState]
	refreshing          atomic.Bool  // a background check of a known head runs
	retryAt             atomic.Int64 // unix nanoseconds: no background check before, after one failed
	// lookup serializes look-ups of the head, so the answer of the one
	// that started last is stored last: a background check that began
	// before a push cannot overwrite what the push's check found.
	lookup sync.Mutex
}

// repoState is what is known of the branch head. Immutable; replaced whole.
type repoState struct {
	commit  string // "" when missing
	branch  string // the branch resolved (for branch "": pages or the default)
	missing bool   // no such owner, repository or branch
	checked time.Time
	space   *space       // the commit's cached files
	extra   *commitExtra // what is derived from the commit once
}

// commitExtra holds per-commit data loaded on first use.
type commitExtra struct {
	once      sync.Once
	redirects *Redirects

	sizeMu   sync.Mutex // guards what follows; a failed read is retried
	measured bool
	size     int64

	domainsRead bool
	domains     []string
}

// Name is "owner/repo" or "owner/repo@branch", the site name the meter uses.
func (r *GiteaRepo) Name() string {
	if r.branch == "" || r.branch == r.g.cfg.PagesBranch {
		return r.owner + "/" + r.repo
	}
	return r.owner + "/" + r.repo + "@" + r.branch
}

func (r *GiteaRepo) resolvedBranch() string {
	if st := r.state.Load(); st != nil {
		return st.branch
	}
	return r.branch
}

func (r *GiteaRepo) setHead(commit, branch string) {
	old := r.state.Load()
	if old != nil && old.commit == commit {
		r.state.Store(&repoState{commit: commit, branch: branch, checked: r.g.now(), space: old.space, extra: old.extra})
		return
	}
	r.state.Store(&repoState{commit: commit, branch: branch, checked: r.g.now(), space: r.g.cache.newSpace(), extra: &commitExtra{}})
	if old != nil && old.space != nil {
		r.g.cache.dropSpace(old.space)
	}
}

// expire makes the next request check the head again, in the background.
func (r *GiteaRepo) expire() {
	r.lookup.Lock()
	defer r.lookup.Unlock()
	if old := r.state.Load(); old != nil {
		st := *old
		st.checked = time.Time{}
		r.state.Store(&st)
	}
}

// Exists reports whether the repository and branch exist (cached). A
// look-up is bounded by gitea_timeout.
func (r *GiteaRepo) Exists() (bool, error) {
	st, err := r.current()
	if err != nil {
		return false, err
	}
	return !st.missing, nil
}

// current returns the known head. Only an unknown head is looked up now,
// one call for all waiting requests. A known answer is served from memory,
// commit or "missing" alike: past Revalidate (a commit) or NegativeTTL
// (missing) it is checked again in the background, and while that check
// fails the known answer stays and the check is retried every BreakerRetry.
// A request never waits on Gitea for a head it already knows.
func (r *GiteaRepo) current() (*repoState, error) {
	st := r.state.Load()
	if st == nil {
		v, err, _ := r.g.sf.Do("head:"+r.owner+"/"+r.repo+"@"+r.branch, func() (any, error) {
			return r.refresh()
		})
		if err != nil {
			return nil, err
		}
		return v.(*repoState), nil
	}
	ttl := r.g.cfg.Revalidate
	if st.missing {
		ttl = r.g.cfg.NegativeTTL
	}
	if now := r.g.now(); now.Sub(st.checked) >= ttl && now.UnixNano() >= r.retryAt.Load() &&
		r.refreshing.CompareAndSwap(false, true) {
		go r.refreshInBackground()
	}
	return st, nil
}

// refreshInBackground is current's check of a known head. On error the
// known answer stays (stale-if-error) and is checked again no sooner than
// BreakerRetry.
func (r *GiteaRepo) refreshInBackground() {
	defer r.refreshing.Store(false)
	if _, err := r.refresh(); err != nil {
		r.retryAt.Store(r.g.now().Add(BreakerRetry).UnixNano())
	}
}

// refresh asks Gitea for the branch head and stores it. Its calls are
// bounded by gitea_timeout (the API client's timeout).
func (r *GiteaRepo) refresh() (*repoState, error) {
	r.lookup.Lock()
	defer r.lookup.Unlock()
	branch := r.branch
	if branch == "" {
		branch = r.g.cfg.PagesBranch
	}
	commit, found, err := r.branchHead(branch)
	if err == nil && !found && r.branch == "" {
		// The pages rule: no pages branch, so the default branch.
		var repo *gitea.Repository
		var resp *gitea.Response
		repo, resp, err = r.g.api.GetRepo(r.owner, r.repo)
		switch {
		case err == nil && repo.DefaultBranch != "":
			branch = repo.DefaultBranch
			commit, found, err = r.branchHead(branch)
		case resp != nil && resp.StatusCode == http.StatusNotFound:
			err = nil
		}
	}
	if err != nil {
		return nil, upstreamError(err)
	}
	if !found {
		old := r.state.Load()
		st := &repoState{missing: true, branch: branch, checked: r.g.now()}
		r.state.Store(st)
		if old != nil && old.space != nil {
			r.g.cache.dropSpace(old.space)
		}
		return st, nil
	}
	r.setHead(commit, branch)
	return r.state.Load(), nil
}

func (r *GiteaRepo) branchHead(branch string) (commit string, found bool, err error) {
	b, resp, err := r.g.api.GetRepoBranch(r.owner, r.repo, branch)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return "", false, nil
		}
		return "", false, err
	}
	if b.Commit == nil || b.Commit.ID == "" {
		return "", false, fmt.Errorf("branch %s has no commit", branch)
	}
	return b.Commit.ID, true, nil
}

// Redirects returns the rules of the served commit's _redirects file (nil
// without one), read once per commit.
func (r *GiteaRepo) Redirects() *Redirects {
	st := r.state.Load()
	if st == nil || st.missing || st.extra == nil {
		return nil
	}
	st.extra.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
		defer cancel()
		f, err := r.fetch(ctx, st.commit, "_redirects")
		if err != nil || f.Body == nil {
			return // none, too large, or Gitea down: no rules for this commit
		}
		rules, perr := ParseRedirects(f.Body)
		if perr != nil {
			r.g.log(perr, r.owner+"/"+r.repo)
		}
		st.extra.redirects = rules
	})
	return st.extra.redirects
}

// maxTreePages bounds the pages of a tree listing (1000 entries each).
const maxTreePages = 1000

// TreeSize returns the bytes of the files of the served commit (the
// recursive tree), measured once per commit: the site's storage.
func (r *GiteaRepo) TreeSize(ctx context.Context) (int64, error) {
	st, err := r.current()
	if err != nil {
		return 0, err
	}
	if st.missing || st.extra == nil {
		return 0, nil
	}
	x := st.extra
	x.sizeMu.Lock()
	defer x.sizeMu.Unlock()
	if x.measured {
		return x.size, nil
	}
	var total int64
	for page := 1; page <= maxTreePages; page++ {
		tree, _, err := r.g.api.GetTrees(r.owner, r.repo, gitea.ListTreeOptions{
			ListOptions: gitea.ListOptions{Page: page, PageSize: 1000}, Ref: st.commit, Recursive: true})
		if err != nil {
			return 0, fmt.Errorf("%w: tree of %s/%s: %v", ErrUpstream, r.owner, r.repo, err)
		}
		for _, e := range tree.Entries {
			if e.Type == "blob" {
				total += e.Size
			}
		}
		if !tree.Truncated || len(tree.Entries) == 0 {
			break
		}
	}
	x.size, x.measured = total, true
	return total, nil
}

// Owner and RepoName name the repository.
func (r *GiteaRepo) Owner() string    { return r.owner }
func (r *GiteaRepo) RepoName() string { return r.repo }

// OwnerExists reports whether a Gitea user or organization named owner
// exists (one API call, bounded by gitea_timeout and ctx; not cached: the
// caller caches). KnownOwner is its cached, rate-limited form.
func (g *Gitea) OwnerExists(ctx context.Context, owner string) (bool, error) {
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
func (g *Gitea) Known() []*GiteaRepo {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*GiteaRepo
	for _, r := range g.repos {
		if st := r.state.Load(); st != nil && !st.missing {
			out = append(out, r)
		}
	}
	return out
}

// Get returns the file served at urlPath (a path inside the repository,
// starting with "/"), with the same rules as a directory: index.html, clean
// URLs, ErrIsDir for a directory without its slash, at the time of the
// source's clock (GiteaOptions.Now).
func (r *GiteaRepo) Get(urlPath []byte) (*File, error) { return r.GetAt(urlPath, r.g.now()) }

// GetAt is Get with the caller's idea of now, as DirSource.GetAt.
func (r *GiteaRepo) GetAt(urlPath []byte, at time.Time) (*File, error) {
	st, err := r.current()
	if err != nil {
		return nil, err
	}
	if st.missing {
		return nil, ErrFileNotFound
	}
	now := at.UnixNano()
	if e := r.g.cache.lookup(st.space, urlPath); e != nil {
		// Files of a commit never change; only remembered misses expire
		// (the raw endpoint can 404 a file for a moment after a push). An
		// expired miss is still the answer: it is checked again in the
		// background, once per NegativeTTL.
		if checked := e.checked.Load(); e.file == nil && now-checked >= int64(r.g.cfg.NegativeTTL) &&
			e.checked.CompareAndSwap(checked, now) {
			go r.recheckMiss(st, string(urlPath), now)
		}
		r.g.cache.hits.Add(1)
		return e.file, e.err
	}
	r.g.cache.misses.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
	defer cancel()
	key := string(urlPath)
	v, err, _ := r.g.sf.Do("file:"+st.commit+":"+r.owner+"/"+r.repo+":"+key, func() (any, error) {
		// A flight that just ended may have cached it between our look-up
		// and this one.
		if e := r.g.cache.lookup(st.space, urlPath); e != nil && e.file != nil {
			return e.file, nil
		}
		f, err := r.load(ctx, st.commit, key)
		if err == nil || errors.Is(err, ErrFileNotFound) || errors.Is(err, ErrIsDir) {
			r.g.cache.insert(st.space, key, "", f, err, now)
		}
		return f, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*File), nil
}

// recheckMiss loads key at st's commit again for a remembered miss that
// expired; on error the miss stays until its next expiry.
func (r *GiteaRepo) recheckMiss(st *repoState, key string, now int64) {
	ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
	defer cancel()
	f, err := r.load(ctx, st.commit, key)
	if err == nil || errors.Is(err, ErrFileNotFound) || errors.Is(err, ErrIsDir) {
		r.g.cache.insert(st.space, key, "", f, err, now)
	}
}

// load resolves urlPath at commit like DirSource.load, with raw fetches.
func (r *GiteaRepo) load(ctx context.Context, commit, urlPath string) (*File, error) {
	rel, err := servable(urlPath)
	if err != nil {
		return nil, err
	}
	if rel == "" || strings.HasSuffix(rel, "/") {
		return r.fetch(ctx, commit, rel+"index.html")
	}
	f, err := r.fetch(ctx, commit, rel)
	if !errors.Is(err, ErrFileNotFound) {
		return f, err
	}
	if f, err = r.fetch(ctx, commit, rel+".html"); !errors.Is(err, ErrFileNotFound) {
		return f, err
	}
	// A directory? Its index.html exists: send the visitor to the slash.
	if _, err := r.fetch(ctx, commit, rel+"/index.html"); err == nil {
		return nil, ErrIsDir
	}
	return nil, ErrFileNotFound
}

// ValidBranchName reports whether b is a branch name tollgate serves.
func ValidBranchName(b string) bool { return validBranch(b) }

// validBranch accepts what git accepts as a branch name, minus the oddities
// no pages site needs (see git-check-ref-format).
func validBranch(b string) bool {
	if b == "" || len(b) > 255 || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") ||
		strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".") || strings.HasSuffix(b, ".lock") ||
		strings.Contains(b, "..") || strings.Contains(b, "//") || strings.Contains(b, "@{") {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c == 0x7f || strings.ContainsRune("~^:?*[\\", c) {
			return false
		}
	}
	return path.Clean("/"+b) == "/"+b
}
