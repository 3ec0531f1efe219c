package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tollgate-edge/tollgate/internal/pace"
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
// The picture holds no entry per registry site: a site's org and kind are
// in its registry record, and its bytes come from its directory's size
// (walked) for a dir site, or the size Gitea measured (gitSites) for a
// gitea site. A round learns what a changed site was pictured as from the
// record it had before its first write since the last round (before,
// noted with the write). No older snapshot is kept: during a bulk import
// of a million sites, one held from the last round would keep a second
// copy of every shard the import copied since.
//
// With the pages domain set, the same loop gives pages repositories the
// custom domains their .domains files declare and DNS proves (claim).
type siteTender struct {
	reg      *sites.Registry
	gitea    *gitea.Source                      // nil: no Gitea source
	meter    *meter.Meter                       // nil: the picture is only kept here
	interval time.Duration                      // between walks of the dir sites
	claim    func(context.Context, *gitea.Repo) // nil: no custom domains from .domains
	log      *slog.Logger
	now      func() time.Time // the clock of interval; tests inject one

	mu sync.Mutex // guards before, stale and snap, written by registry writes
	// before holds the sites written since the last round, each with the
	// record it had at that round (nil: it had none).
	before map[string]*sites.Site
	stale  bool            // the registry was loaded whole: every site may have changed
	snap   *sites.Snapshot // the registry's snapshot with exactly the changes noted so far

	lastDirs time.Time
	pictured bool             // a round has set the picture
	walked   map[string]int64 // dir path -> bytes, from the last walk: every pictured dir site's
	gitSites map[string]int64 // id -> bytes of the pictured gitea sites that Gitea measured
	pages    meter.StorageMap // the pages repositories without a registry site
	measured int              // sites the last round measured (tests read it)
}

// newSiteTender returns a tender that follows reg's writes.
func newSiteTender(reg *sites.Registry, g *gitea.Source, m *meter.Meter, interval time.Duration, claim func(context.Context, *gitea.Repo),
	log *slog.Logger, now func() time.Time) *siteTender {
	t := &siteTender{reg: reg, gitea: g, meter: m, interval: interval, claim: claim, log: log, now: now, before: map[string]*sites.Site{}}
	reg.OnChange(t.noteChange)
	return t
}

// noteChange records the sites a registry write changed (nil: all), with
// the record each had before its first write since the last round (from
// the snapshot noted before this one: the registry calls it for every
// snapshot, in order), and the snapshot that has the changes.
func (t *siteTender) noteChange(snap *sites.Snapshot, d *sites.Delta) {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.snap
	t.snap = snap
	if d == nil || prev == nil {
		t.stale = true
		clear(t.before)
		return
	}
	for _, id := range d.Sites {
		if _, ok := t.before[id]; !ok {
			t.before[id] = prev.Sites.Get(id)
		}
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
	// The changes and the snapshot that has exactly them, taken together:
	// a write after snap is noted against snap, the picture this round
	// makes.
	t.mu.Lock()
	before, stale, snap := t.before, t.stale, t.snap
	t.before, t.stale = map[string]*sites.Site{}, false
	t.mu.Unlock()
	walk := t.now().Sub(t.lastDirs) >= t.interval
	if walk || stale || !t.pictured {
		t.whole(ctx, snap, walk)
		return
	}
	if len(before) == 0 && t.gitea == nil {
		t.measured = 0
		return // nothing to measure and the sites are the same: the picture stands
	}
	for id := range t.gitSites {
		if _, ok := before[id]; !ok {
			before[id] = snap.Sites.Get(id) // unchanged, but a push changes what it stores
		}
	}
	var p pace.Pacer // a million sites: give the core back now and then (package pace)
	t.measured = len(before)
	for id, prev := range before {
		p.Step()
		t.update(ctx, id, prev, snap.Sites.Get(id))
	}
	t.measurePages(ctx, snap, true)
}

// whole sets the whole picture: every site of snap, after walking every
// dir site's directory when walk.
func (t *siteTender) whole(ctx context.Context, snap *sites.Snapshot, walk bool) {
	if walk || t.walked == nil {
		t.lastDirs, t.walked = t.now(), map[string]int64{}
	}
	last := t.gitSites
	t.measured = snap.Sites.Len()
	t.gitSites = map[string]int64{}
	var p pace.Pacer // a million sites: give the core back now and then (package pace)
	for _, s := range snap.Sites.All() {
		p.Step()
		b, known := last[s.ID]
		t.measure(ctx, s, b, known)
	}
	t.pictured = true
	t.measurePages(ctx, snap, false)
	if t.meter != nil {
		t.meter.Reserve(snap.Sites.Len()) // one growth of its index, not twenty under its lock
		t.meter.ReplaceStorage(func(set func(org, site, kind string, n int64)) {
			for id, s := range snap.Sites.All() {
				p.Step()
				if b, ok := t.bytes(s); ok {
					set(s.Org, id, s.Source.Type, b)
				}
			}
			t.pages.Each(set)
		})
	}
}

// measure measures site s into the picture and returns what it stores
// (false: nothing to picture: an upstream site, or a gitea one Gitea cannot
// measure and never could). A dir site's directory is walked unless it was
// since the last walk; a gitea site's size goes to gitSites. last is the
// size Gitea measured for s before, if known: kept while Gitea cannot
// measure it.
func (t *siteTender) measure(ctx context.Context, s *sites.Site, last int64, known bool) (int64, bool) {
	switch s.Source.Type {
	case sites.SourceDir:
		n, ok := t.walked[s.Source.Path]
		if !ok { // new since the last walk: sites sharing it walk it once
			var err error
			if n, err = content.DirUsage(s.Source.Path); err != nil {
				t.log.Warn("measuring site storage", slog.String("site", s.ID), slog.Any("err", err))
			}
			t.walked[s.Source.Path] = n
		}
		return n, true
	case sites.SourceGitea:
		if t.gitea == nil {
			return 0, false
		}
		n, ok := repoSize(ctx, t.gitea.Repo(s.Source.Owner, s.Source.Repo, s.Source.Branch), t.log)
		if !ok {
			n, ok = last, known // Gitea down: keep the last size
		}
		if ok {
			t.gitSites[s.ID] = n
		}
		return n, ok
	}
	return 0, false
}

// bytes is what the picture holds for registry site s: its directory's
// size, or the size Gitea measured (false: not pictured).
func (t *siteTender) bytes(s *sites.Site) (int64, bool) {
	var n int64
	var ok bool
	switch s.Source.Type {
	case sites.SourceDir:
		n, ok = t.walked[s.Source.Path]
	case sites.SourceGitea:
		n, ok = t.gitSites[s.ID]
	}
	return n, ok
}

// stored is what the picture holds for site of org: a registry site's
// bytes (as the latest snapshot has it), or a pages repository's.
func (t *siteTender) stored(org, site string) (int64, bool) {
	t.mu.Lock()
	snap := t.snap
	t.mu.Unlock()
	if snap != nil {
		if s := snap.Sites.Get(site); s != nil && s.Org == org {
			if n, ok := t.bytes(s); ok {
				return n, true
			}
		}
	}
	_, n, ok := t.pages.Get(org, site)
	return n, ok
}

// update measures registry site id again (s nil: deleted) and tells the
// meter what changed: a site deleted, or gone to another org, stops
// accruing for the former one at once; one still there changes its bytes
// in place (never passing through 0, which a flush in between would count
// for its whole interval). prev is the record id was pictured with (nil:
// none).
func (t *siteTender) update(ctx context.Context, id string, prev, s *sites.Site) {
	var had bool
	var org, kind string
	if prev != nil {
		_, had = t.bytes(prev)
		org, kind = prev.Org, prev.Source.Type
	}
	last, known := t.gitSites[id]
	delete(t.gitSites, id) // measure puts it back for a gitea site it measures
	var n int64
	var ok bool
	if s != nil {
		n, ok = t.measure(ctx, s, last, known)
	}
	if had && (!ok || s.Org != org) && t.meter != nil {
		t.meter.Counters(org, id, kind).SetStorage(0)
	}
	if ok && t.meter != nil {
		t.meter.Counters(s.Org, id, s.Source.Type).SetStorage(n)
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
