package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// publishGate is the Gitea source's gate (gitea.PublishGate): it names the
// sites a repository is served as, the way the site tender meters them
// (storage.go: the registry's gitea sites of that repository branch, and,
// unless its pages site exists, the repository as a pages site of the org
// paying for its owner), and holds each to its org's storage quota
// (billing.PublishGuard). A commit is published only if every one of them
// may store it.
//
// The Gitea source starts before billing, and site tending looks its
// repositories up at once: a repository whose refusal was recorded before a
// restart asks the gate then. So the gate waits for its guard (bounded by
// the caller's ctx) instead of letting that head through.
type publishGate struct {
	reg   *sites.Registry
	guard atomic.Pointer[billing.PublishGuard] // set once billing starts (setGuard)
	ready chan struct{}                        // closed by setGuard
	index giteaSites
}

var _ gitea.PublishGate = (*publishGate)(nil)

// errNoGuard refuses a head asked before billing started within the
// caller's deadline: the served commit stays until the next check.
var errNoGuard = errors.New("billing has not started: the storage quota cannot be checked yet")

// newPublishGate returns the gate of reg's sites; its guard is set once
// billing is built.
func newPublishGate(reg *sites.Registry) *publishGate {
	g := &publishGate{reg: reg, ready: make(chan struct{})}
	reg.OnChange(g.index.update)
	return g
}

// setGuard gives the gate billing's guard; call it once.
func (g *publishGate) setGuard(guard *billing.PublishGuard) {
	g.guard.Store(guard)
	close(g.ready)
}

// waitGuard returns the guard once billing has started, or nil when ctx
// ends first.
func (g *publishGate) waitGuard(ctx context.Context) *billing.PublishGuard {
	select {
	case <-g.ready:
		return g.guard.Load()
	case <-ctx.Done():
		return nil
	}
}

// AllowPublish asks the guard for each site the repository is served as.
func (g *publishGate) AllowPublish(ctx context.Context, p gitea.Publish) error {
	guard := g.waitGuard(ctx)
	if guard == nil {
		return errNoGuard
	}
	var errs []error
	for _, t := range g.targets(p) {
		errs = append(errs, guard.AllowPublish(ctx, billing.PublishCheck{Org: t.org, Site: t.site,
			Commit: p.Commit, Published: p.Published, Bytes: p.Bytes, PublishedBytes: p.PublishedBytes}))
	}
	return errors.Join(errs...)
}

// Published clears the refusals of each site the repository is served as,
// and of its pages name (p.Name), which it was refused under while it had
// no registry site of its own.
func (g *publishGate) Published(ctx context.Context, p gitea.Publish) {
	guard := g.waitGuard(ctx)
	if guard == nil {
		return
	}
	named := false
	for _, t := range g.targets(p) {
		guard.Published(ctx, t.site)
		named = named || t.site == p.Name
	}
	if !named {
		guard.Published(ctx, p.Name)
	}
}

type publishTarget struct{ org, site string }

// targets lists the (org, site) pairs the tender meters the repository
// branch under.
func (g *publishGate) targets(p gitea.Publish) []publishTarget {
	snap := g.reg.Snapshot()
	var out []publishTarget
	for _, id := range g.index.of(p.Owner, p.Repo, p.Branch) {
		if s := snap.Sites.Get(id); s != nil {
			out = append(out, publishTarget{org: s.Org, site: s.ID})
		}
	}
	if snap.Sites.Get(gitea.PagesSiteID(p.Owner, p.Repo)) == nil {
		out = append(out, publishTarget{org: snap.OrgForGiteaOwner(p.Owner), site: p.Name})
	}
	return out
}

// giteaSites indexes the registry's gitea sites by repository branch, kept
// in step with each write (its Delta), so a publish does not go over every
// site.
type giteaSites struct {
	mu     sync.Mutex
	byRepo map[string][]string // "owner/repo@branch" → site ids
	keyOf  map[string]string   // site id → its key in byRepo
}

func giteaKey(owner, repo, branch string) string { return owner + "/" + repo + "@" + branch }

// update is a registry subscriber (sites.Registry.OnChange): it costs what
// d names, or the whole registry when d is nil (a full load).
func (x *giteaSites) update(s *sites.Snapshot, d *sites.Delta) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if d == nil {
		x.byRepo, x.keyOf = map[string][]string{}, map[string]string{}
		for id, site := range s.Sites.All() {
			x.putLocked(id, site)
		}
		return
	}
	for _, id := range d.Sites {
		if k, ok := x.keyOf[id]; ok {
			ids := x.byRepo[k]
			for i, v := range ids {
				if v == id {
					ids = append(ids[:i:i], ids[i+1:]...)
					break
				}
			}
			if len(ids) == 0 {
				delete(x.byRepo, k)
			} else {
				x.byRepo[k] = ids
			}
			delete(x.keyOf, id)
		}
		x.putLocked(id, s.Sites.Get(id))
	}
}

func (x *giteaSites) putLocked(id string, s *sites.Site) {
	if s == nil || s.Source.Type != sites.SourceGitea {
		return
	}
	k := giteaKey(s.Source.Owner, s.Source.Repo, s.Source.Branch)
	x.byRepo[k] = append(x.byRepo[k], id)
	x.keyOf[id] = k
}

// of returns the ids of the gitea sites of owner/repo at branch.
func (x *giteaSites) of(owner, repo, branch string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.byRepo[giteaKey(owner, repo, branch)]...)
}
