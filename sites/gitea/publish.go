package gitea

// Publishing: a repository moves to a new head commit only if its gate
// allows it.

import (
	"context"
	"fmt"

	sdk "code.gitea.io/sdk/gitea"
)

// PublishGate decides whether a repository may serve a new head commit
// instead of the one it serves (Options.Gate). *Source defines it; package
// billing's storage quota answers it (wired in cmd/tollgate).
type PublishGate interface {
	// AllowPublish returns nil to publish p.Commit. Any error refuses it:
	// the repository keeps serving p.Published and asks again at its next
	// check of the head (Revalidate, or a push webhook), so a later head, a
	// larger plan or less storage elsewhere publishes then. It is called
	// with the repository's look-up lock held, off the request path except
	// at a repository's first look-up after a restart that found a refusal
	// recorded (Options.Store), which waits on Gitea anyway: it should be
	// fast (memory, or one bounded write), and it must be safe for
	// concurrent use (repositories check their heads concurrently).
	AllowPublish(ctx context.Context, p Publish) error
	// Published tells that a repository the gate refused before has
	// published a commit since (p.Commit; p.Published is the commit it
	// served): a later head it allowed, or its head came back to the served
	// commit. The gate drops what it holds about the refusal.
	Published(ctx context.Context, p Publish)
}

// Publish is a head commit a repository would serve instead of the one it
// serves, with the sizes of both trees (bytes of their files, as TreeSize).
type Publish struct {
	Owner, Repo string
	// Branch is the branch asked for: "" for the pages rule (the pages
	// branch, else the default branch).
	Branch string
	// Name is Repo.Name(), the site name the meter counts a pages
	// repository under.
	Name string
	// Commit is the new head, Published the commit served now.
	Commit, Published string
	// Bytes and PublishedBytes are the sizes of their trees.
	Bytes, PublishedBytes int64
}

// pendingHead is a head the repository has not published: its gate refused
// it, or its size could not be measured yet. Its size is measured once.
type pendingHead struct {
	commit string
	extra  *commitExtra // becomes the served commit's on publish
}

// publish makes commit (on branch) the served head, or keeps the served
// one when the gate refuses it. Called by refresh, with r.lookup held.
//
// Without a gate, and for a first publish (nothing served yet on this node:
// a repository seen for the first time, or after a restart without a
// refusal recorded, or one that did not exist), the head is published as it
// is: serving nothing would be worse than serving one tree over the quota,
// which the org's measured storage then shows (GET /v1/orgs/{id}, the
// quota.exceeded hook). A repository whose record (published.go) says a
// refusal stood when the node stopped is no first publish: the recorded
// commit is served again and the head is asked of the gate. When the size
// of either tree cannot be read (Gitea down or slow), neither is decided:
// the served commit stays, the error is returned and the head is checked
// again at the next recheck (BreakerRetry after a failed background check;
// the next request after a failed webhook check), never published
// unmeasured.
func (r *Repo) publish(commit, branch string) (*repoState, error) {
	old := r.state.Load()
	gate := r.g.gate
	if old == nil && gate != nil && r.record != nil {
		old = r.restore()
	}
	served := old != nil && !old.missing
	if gate == nil || !served || old.commit == commit {
		if r.refused && gate != nil {
			// The head came back to the served commit (or the branch came
			// back after it was deleted): nothing is refused now.
			p := Publish{Owner: r.owner, Repo: r.repo, Branch: r.branch, Name: r.Name(), Commit: commit}
			if served {
				p.Published = old.commit
			}
			ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
			gate.Published(ctx, p)
			cancel()
		}
		r.pending, r.refused = nil, false
		r.dropRecord()
		r.setHead(commit, branch, nil)
		return r.state.Load(), nil
	}
	if r.pending == nil || r.pending.commit != commit {
		r.pending = &pendingHead{commit: commit, extra: &commitExtra{}}
	}
	p := Publish{Owner: r.owner, Repo: r.repo, Branch: r.branch, Name: r.Name(), Commit: commit, Published: old.commit}
	var err error
	if p.Bytes, err = r.measure(commit, r.pending.extra); err != nil {
		return nil, err
	}
	if p.PublishedBytes, err = r.measure(old.commit, old.extra); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
	defer cancel()
	if err := gate.AllowPublish(ctx, p); err != nil {
		r.refused = true
		r.saveRecord(old, commit)
		r.g.log(fmt.Errorf("commit %s not published: %w", commit, err), r.Name())
		st := *old // the served commit stays, checked again after Revalidate
		st.checked = r.g.now()
		r.state.Store(&st)
		return &st, nil
	}
	extra, refused := r.pending.extra, r.refused
	r.pending, r.refused = nil, false
	r.dropRecord()
	r.setHead(commit, branch, extra)
	if refused {
		gate.Published(ctx, p)
	}
	return r.state.Load(), nil
}

// maxTreePages bounds the pages of a tree listing (1000 entries each).
const maxTreePages = 1000

// measure returns the bytes of the files of commit (its recursive tree),
// read once into x; a failed read is tried again at the next call. Each
// call to Gitea is bounded by gitea_timeout.
func (r *Repo) measure(commit string, x *commitExtra) (int64, error) {
	x.sizeMu.Lock()
	defer x.sizeMu.Unlock()
	if x.measured {
		return x.size, nil
	}
	var total int64
	for page := 1; page <= maxTreePages; page++ {
		tree, _, err := r.g.api.GetTrees(r.owner, r.repo, sdk.ListTreeOptions{
			ListOptions: sdk.ListOptions{Page: page, PageSize: 1000}, Ref: commit, Recursive: true})
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
