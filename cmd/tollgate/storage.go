package main

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// tendSites keeps the meter's picture of what every site stores, from now
// until ctx ends (siteTender, on the wall clock).
func tendSites(ctx context.Context, reg *sites.Registry, g *gitea.Source, m *meter.Meter, interval time.Duration, claim func(context.Context, *gitea.Repo), log *slog.Logger) {
	newSiteTender(reg, g, m, interval, claim, log, time.Now).run(ctx)
}

// siteTender keeps the meter's picture of what every site stores; the meter
// integrates it into storage_byte_seconds.
//
//   - dir sites: a walk of the directory every interval (once per
//     directory, however many sites serve it);
//   - Gitea repositories (gitea sites, and every pages repository served so
//     far): their tree at the served commit, measured once per commit, so
//     looking every tick costs nothing until a push.
//
// A round at a walk (and the first, and after the registry was reloaded)
// sets the whole picture (meter.ReplaceStorage). In between, a round costs
// what changed: the sites the registry wrote since the last round (a new
// dir site gets the size its directory had at the last walk, or is walked
// now; a deleted one, or one that moved to another org, stops accruing at
// once), the gitea sites and the pages repositories. So registry writes,
// hundreds a second on a million sites, do not each cost a pass over every
// site. Upstream sites store nothing here.
//
// With the pages domain set, the same loop gives pages repositories the
// custom domains their .domains files declare and DNS proves (claim).
type siteTender struct {
	reg      *sites.Registry
	gitea    *gitea.Source                      // nil: no Gitea source
	meter    *meter.Meter                       // nil: the picture is only kept in last
	interval time.Duration                      // between walks of the dir sites
	claim    func(context.Context, *gitea.Repo) // nil: no custom domains from .domains
	log      *slog.Logger
	now      func() time.Time // the clock of interval; tests inject one

	mu      sync.Mutex      // guards changed and stale, written by registry writes
	changed map[string]bool // ids of sites written since the last round
	stale   bool            // the registry was loaded whole: every site may have changed

	lastDirs time.Time
	walked   map[string]int64 // dir path -> bytes, from the last walk
	// The picture: the registry sites (nil before the first round) and the
	// pages repositories without one.
	sites    map[string]siteSize
	pages    meter.StorageMap
	gitSites map[string]bool // ids of the gitea sites among sites
	measured int             // sites the last round measured (tests read it)
}

// siteSize is a registry site's entry in the picture.
type siteSize struct {
	org, kind string
	n         int64
}

// newSiteTender returns a tender that follows reg's writes.
func newSiteTender(reg *sites.Registry, g *gitea.Source, m *meter.Meter, interval time.Duration, claim func(context.Context, *gitea.Repo),
	log *slog.Logger, now func() time.Time) *siteTender {
	t := &siteTender{reg: reg, gitea: g, meter: m, interval: interval, claim: claim, log: log, now: now, changed: map[string]bool{}}
	reg.OnChange(t.noteChange)
	return t
}

// noteChange records the sites a registry write changed (nil: all).
func (t *siteTender) noteChange(_ *sites.Snapshot, d *sites.Delta) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d == nil {
		t.stale = true
		return
	}
	for _, id := range d.Sites {
		t.changed[id] = true
	}
}

// run does a round now, then one every tick (the interval, at most 2 s), or,
// when a round takes longer than a tenth of that, ten times as long as the
// round took (a walk of a million sites: the tender stays under a tenth of
// a core), until ctx ends.
func (t *siteTender) run(ctx context.Context) {
	tick := min(t.interval, 2*time.Second)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		t.round(ctx)
		timer.Reset(max(tick, 10*time.Since(start)))
	}
}

// round measures what it is time to measure and hands the meter what
// changed, or the whole picture.
func (t *siteTender) round(ctx context.Context) {
	t.mu.Lock()
	changed, stale := t.changed, t.stale
	t.changed, t.stale = map[string]bool{}, false
	t.mu.Unlock()
	// After taking the changes: a registry write publishes its snapshot
	// before telling noteChange, so each change taken is in snap.
	snap := t.reg.Snapshot()
	walk := t.now().Sub(t.lastDirs) >= t.interval
	if walk || stale || t.sites == nil {
		t.whole(ctx, snap, walk)
		return
	}
	if len(changed) == 0 && t.gitea == nil {
		t.measured = 0
		return // nothing to measure and the sites are the same: the picture stands
	}
	ids := make([]string, 0, len(changed))
	for id := range changed {
		ids = append(ids, id)
	}
	if t.gitea != nil {
		for id := range t.gitSites {
			if !changed[id] {
				ids = append(ids, id) // a push changes what it stores
			}
		}
	}
	n := 0
	t.measured = len(ids)
	for _, id := range ids {
		yield(&n)
		t.update(ctx, id, snap.Sites.Get(id))
	}
	t.measurePages(ctx, snap, true)
}

// whole sets the whole picture: every site of snap, after walking every
// dir site's directory when walk.
func (t *siteTender) whole(ctx context.Context, snap *sites.Snapshot, walk bool) {
	if walk || t.walked == nil {
		t.lastDirs, t.walked = t.now(), map[string]int64{}
	}
	prev := t.sites
	t.measured = snap.Sites.Len()
	t.sites, t.gitSites = map[string]siteSize{}, map[string]bool{}
	n := 0
	for _, s := range snap.Sites.All() {
		yield(&n)
		if e, ok := t.measure(ctx, s, prev[s.ID]); ok {
			t.put(s.ID, e)
		}
	}
	t.measurePages(ctx, snap, false)
	if t.meter != nil {
		t.meter.ReplaceStorage(func(set func(org, site, kind string, n int64)) {
			for id, e := range t.sites {
				set(e.org, id, e.kind, e.n)
			}
			t.pages.Each(set)
		})
	}
}

// measure is what site s stores (false: nothing to picture: an upstream
// site, or a gitea one Gitea cannot measure and never could); prev is its
// last entry, kept for a repository Gitea cannot measure now.
func (t *siteTender) measure(ctx context.Context, s *sites.Site, prev siteSize) (siteSize, bool) {
	e := siteSize{org: s.Org, kind: s.Source.Type}
	switch s.Source.Type {
	case sites.SourceDir:
		var ok bool
		if e.n, ok = t.walked[s.Source.Path]; !ok { // new since the last walk: sites sharing it walk it once
			var err error
			if e.n, err = content.DirUsage(s.Source.Path); err != nil {
				t.log.Warn("measuring site storage", slog.String("site", s.ID), slog.Any("err", err))
			}
			t.walked[s.Source.Path] = e.n
		}
		return e, true
	case sites.SourceGitea:
		if t.gitea == nil {
			return e, false
		}
		var ok bool
		if e.n, ok = repoSize(ctx, t.gitea.Repo(s.Source.Owner, s.Source.Repo, s.Source.Branch), t.log); !ok {
			e.n = prev.n // Gitea down: keep the last size
			return e, prev.kind == sites.SourceGitea
		}
		return e, true
	}
	return e, false
}

// put makes e registry site id's entry in the picture.
func (t *siteTender) put(id string, e siteSize) {
	t.sites[id] = e
	if e.kind == sites.SourceGitea {
		t.gitSites[id] = true
	}
}

// stored is what the picture holds for site of org: a registry site's
// entry, or a pages repository's.
func (t *siteTender) stored(org, site string) (int64, bool) {
	if e, ok := t.sites[site]; ok && e.org == org {
		return e.n, true
	}
	_, n, ok := t.pages.Get(org, site)
	return n, ok
}

// update measures registry site id again (s nil: deleted) and tells the
// meter what changed: a site deleted, or gone to another org, stops
// accruing for the former one at once; one still there changes its bytes
// in place (never passing through 0, which a flush in between would count
// for its whole interval).
func (t *siteTender) update(ctx context.Context, id string, s *sites.Site) {
	prev, had := t.sites[id]
	var e siteSize
	var ok bool
	if s != nil {
		e, ok = t.measure(ctx, s, prev)
	}
	if had && (!ok || e.org != prev.org) {
		delete(t.sites, id)
		delete(t.gitSites, id)
		if t.meter != nil {
			t.meter.Counters(prev.org, id, prev.kind).SetStorage(0)
		}
	}
	if ok {
		t.put(id, e)
		if t.meter != nil {
			t.meter.Counters(e.org, id, e.kind).SetStorage(e.n)
		}
	}
}

// measurePages measures every pages repository served so far that has no
// registry site (which measure covered), as the proxy counts pages: the org
// paying for the owner, the repository's name as the site. With live
// (between whole pictures) the meter follows: a repository whose org
// changed stops accruing for the former one.
func (t *siteTender) measurePages(ctx context.Context, snap *sites.Snapshot, live bool) {
	if t.gitea == nil {
		return
	}
	next := meter.StorageMap{}
	for _, r := range t.gitea.Known() {
		if snap.Sites.Get(gitea.PagesSiteID(r.Owner(), r.RepoName())) == nil {
			org := snap.OrgForGiteaOwner(r.Owner())
			if n, ok := repoSize(ctx, r, t.log); ok {
				next.Set(org, r.Name(), sites.SourceGitea, n)
			} else if _, n, ok := t.pages.Get(org, r.Name()); ok {
				next.Set(org, r.Name(), sites.SourceGitea, n) // Gitea down: keep the last size
			}
		}
		if t.claim != nil {
			t.claim(ctx, r)
		}
	}
	if live && t.meter != nil {
		for k := range t.pages {
			if _, ok := next[k]; !ok {
				t.meter.Counters(k[0], k[1], sites.SourceGitea).SetStorage(0)
			}
		}
		next.Each(func(org, site, kind string, n int64) { t.meter.Counters(org, site, kind).SetStorage(n) })
	}
	t.pages = next
}

// yield gives up the core every 1,024 sites of a round: on one core,
// requests would otherwise wait a scheduler time slice at each of their steps
// while the round goes over a million sites.
func yield(n *int) {
	if *n++; *n%1024 == 0 {
		runtime.Gosched()
	}
}

func repoSize(ctx context.Context, r *gitea.Repo, log *slog.Logger) (int64, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := r.TreeSize(ctx)
	if err != nil {
		log.Warn("measuring repository storage", slog.String("repo", r.Name()), slog.Any("err", err))
		return 0, false
	}
	return n, true
}
