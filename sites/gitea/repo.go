package gitea

// One repository branch: its head, and what is derived from its commit.

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	sdk "code.gitea.io/sdk/gitea"
	"github.com/tollgate-edge/tollgate/sites/content"
)

// Repo is one repository branch served from Gitea.
type Repo struct {
	g                   *Source
	owner, repo, branch string
	state               atomic.Pointer[repoState]
	refreshing          atomic.Bool  // a background check of a known head runs
	retryAt             atomic.Int64 // unix nanoseconds: no background check before, after one failed
	// lookup serializes look-ups of the head, so the answer of the one
	// that started last is stored last: a background check that began
	// before a push cannot overwrite what the push's check found.
	lookup sync.Mutex
	// Guarded by lookup (publish.go): the newest head not published, and
	// whether the gate refused a head since the last publish.
	pending *pendingHead
	refused bool
	// Guarded by lookup (published.go): whether the repository's record
	// was read from Options.Store, and the record (nil: none).
	loaded bool
	record *publishedRecord
}

// repoState is what is known of the branch head. Immutable; replaced whole.
type repoState struct {
	commit  string // "" when missing
	branch  string // the branch resolved (for branch "": pages or the default)
	missing bool   // no such owner, repository or branch
	checked time.Time
	space   *content.Space // the commit's cached files
	extra   *commitExtra   // what is derived from the commit once
}

// commitExtra holds per-commit data loaded on first use.
type commitExtra struct {
	once      sync.Once
	redirects *content.Redirects

	sizeMu   sync.Mutex // guards what follows; a failed read is retried
	measured bool
	size     int64

	domainsRead bool
	domains     []string
}

// Name is "owner/repo" or "owner/repo@branch", the site name the meter uses.
func (r *Repo) Name() string {
	if r.branch == "" || r.branch == r.g.cfg.PagesBranch {
		return r.owner + "/" + r.repo
	}
	return r.owner + "/" + r.repo + "@" + r.branch
}

// setHead serves commit of branch; extra is what is already known of a new
// commit (nil: nothing).
func (r *Repo) setHead(commit, branch string, extra *commitExtra) {
	old := r.state.Load()
	if old != nil && old.commit == commit {
		r.state.Store(&repoState{commit: commit, branch: branch, checked: r.g.now(), space: old.space, extra: old.extra})
		return
	}
	if extra == nil {
		extra = &commitExtra{}
	}
	r.state.Store(&repoState{commit: commit, branch: branch, checked: r.g.now(), space: r.g.cache.NewSpace(), extra: extra})
	if old != nil && old.space != nil {
		r.g.cache.DropSpace(old.space)
	}
}

// expire makes the next request check the head again, in the background.
func (r *Repo) expire() {
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
func (r *Repo) Exists() (bool, error) {
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
func (r *Repo) current() (*repoState, error) {
	st := r.state.Load()
	if st == nil {
		v, err, _ := r.g.sf.Do("head:"+r.owner+"/"+r.repo+"@"+r.branch, func() (any, error) {
			return r.refresh()
		})
		if err != nil {
			if st := r.state.Load(); st != nil {
				// A restored commit (publish) whose new head could not
				// be decided: served, and checked again in the background.
				r.retryAt.Store(r.g.now().Add(BreakerRetry).UnixNano())
				return st, nil
			}
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
func (r *Repo) refreshInBackground() {
	defer r.refreshing.Store(false)
	if _, err := r.refresh(); err != nil {
		r.retryAt.Store(r.g.now().Add(BreakerRetry).UnixNano())
	}
}

// refresh asks Gitea for the branch head and publishes it (publish: the
// gate may keep the served commit). Its calls are bounded by gitea_timeout
// (the API client's timeout).
func (r *Repo) refresh() (*repoState, error) {
	r.lookup.Lock()
	defer r.lookup.Unlock()
	branch := r.branch
	if branch == "" {
		branch = r.g.cfg.PagesBranch
	}
	commit, found, err := r.branchHead(branch)
	if err == nil && !found && r.branch == "" {
		// The pages rule: no pages branch, so the default branch.
		var repo *sdk.Repository
		var resp *sdk.Response
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
	r.loadRecord()
	if !found {
		old := r.state.Load()
		st := &repoState{missing: true, branch: branch, checked: r.g.now()}
		r.state.Store(st)
		if old != nil && old.space != nil {
			r.g.cache.DropSpace(old.space)
		}
		return st, nil
	}
	return r.publish(commit, branch)
}

func (r *Repo) branchHead(branch string) (commit string, found bool, err error) {
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
func (r *Repo) Redirects() *content.Redirects {
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
		rules, perr := content.ParseRedirects(f.Body)
		if perr != nil {
			r.g.log(perr, r.owner+"/"+r.repo)
		}
		st.extra.redirects = rules
	})
	return st.extra.redirects
}

// TreeSize returns the bytes of the files of the served commit (the
// recursive tree), measured once per commit: the site's storage.
func (r *Repo) TreeSize(ctx context.Context) (int64, error) {
	st, err := r.current()
	if err != nil {
		return 0, err
	}
	if st.missing || st.extra == nil {
		return 0, nil
	}
	return r.measure(st.commit, st.extra)
}

// Owner and RepoName name the repository.
func (r *Repo) Owner() string    { return r.owner }
func (r *Repo) RepoName() string { return r.repo }
