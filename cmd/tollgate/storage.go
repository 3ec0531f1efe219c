package main

import (
	"context"
	"log/slog"
	"runtime"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// tendSites keeps the meter's picture of what every site stores, from now
// until ctx ends (siteTender, on the wall clock).
func tendSites(ctx context.Context, reg *sites.Registry, g *gitea.Source, m *meter.Meter, interval time.Duration, claim func(context.Context, *gitea.Repo), log *slog.Logger) {
	t := &siteTender{reg: reg, gitea: g, meter: m, interval: interval, claim: claim, log: log, now: time.Now}
	t.run(ctx)
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
// Each round sets the whole picture (meter.ReplaceStorage): a site that was
// deleted, or a Gitea owner whose pages now bill another org, stops
// accruing storage for its former (org, site) at once. Upstream sites store
// nothing here.
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

	lastDirs    time.Time
	lastVersion uint64           // the registry snapshot of the last picture
	dirSizes    map[string]int64 // site id -> bytes, from the last walk
	last        meter.StorageMap // the previous round, for repositories Gitea could not measure
}

// run does a round now, then one every tick (the interval, at most 2 s), or,
// when a round takes longer than a tenth of that, ten times as long as the
// round took (a million sites: the tender stays under a tenth of a core),
// until ctx ends. A round without a walk that is due, without Gitea
// repositories and with the registry unchanged does nothing.
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

// round measures what it is time to measure and hands the meter the whole
// picture.
func (t *siteTender) round(ctx context.Context) {
	snap := t.reg.Snapshot()
	n := 0
	walk := t.now().Sub(t.lastDirs) >= t.interval
	if !walk && t.gitea == nil && snap.Version == t.lastVersion && t.last != nil {
		return // nothing to measure and the sites are the same: the picture stands
	}
	t.lastVersion = snap.Version
	if walk {
		t.lastDirs = t.now()
		t.dirSizes = map[string]int64{}
		walked := map[string]int64{} // path -> bytes: sites sharing a directory walk it once
		for _, s := range snap.Sites.All() {
			yield(&n)
			if s.Source.Type != sites.SourceDir {
				continue
			}
			n, ok := walked[s.Source.Path]
			if !ok {
				var err error
				n, err = content.DirUsage(s.Source.Path)
				if err != nil {
					t.log.Warn("measuring site storage", slog.String("site", s.ID), slog.Any("err", err))
				}
				walked[s.Source.Path] = n
			}
			t.dirSizes[s.ID] = n
		}
	}
	picture := meter.StorageMap{}
	repo := func(r *gitea.Repo, org, site string) {
		if n, ok := repoSize(ctx, r, t.log); ok {
			picture.Set(org, site, sites.SourceGitea, n)
		} else if _, n, ok := t.last.Get(org, site); ok {
			picture.Set(org, site, sites.SourceGitea, n) // Gitea down: keep the last size
		}
	}
	for _, s := range snap.Sites.All() {
		yield(&n)
		switch s.Source.Type {
		case sites.SourceDir:
			if n, ok := t.dirSizes[s.ID]; ok {
				picture.Set(s.Org, s.ID, sites.SourceDir, n)
			}
		case sites.SourceGitea:
			if t.gitea != nil {
				repo(t.gitea.Repo(s.Source.Owner, s.Source.Repo, s.Source.Branch), s.Org, s.ID)
			}
		}
	}
	if t.gitea != nil {
		for _, r := range t.gitea.Known() {
			// A repository with custom domains has a registry site,
			// measured above: count it once, not twice.
			if snap.Sites.Get(gitea.PagesSiteID(r.Owner(), r.RepoName())) == nil {
				// As the proxy counts pages: the org paying for the owner,
				// the repository's name as the site.
				repo(r, snap.OrgForGiteaOwner(r.Owner()), r.Name())
			}
			if t.claim != nil {
				t.claim(ctx, r)
			}
		}
	}
	if t.meter != nil {
		t.meter.ReplaceStorage(picture)
	}
	t.last = picture
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
