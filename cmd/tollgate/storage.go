package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// tendSites sets every dir site's stored bytes on its meter counters
// now and then every interval until ctx ends; the meter integrates them into
// storage_byte_seconds. Upstream sites store nothing here.
//
// Gitea repositories (gitea sites and every pages repository served so far)
// are measured by their tree at the served commit, once per commit; this
// loop only asks again when a push moved the commit.
//
// With the pages domain set, the same loop gives pages repositories the
// custom domains their .domains files declare and DNS proves.
func tendSites(ctx context.Context, reg *sites.Registry, g *sites.Gitea, m *meter.Meter, interval time.Duration, claim func(*sites.GiteaRepo), log *slog.Logger) {
	// Repositories are looked at often (a new commit is measured soon after
	// its push; an unchanged one costs nothing); directories every interval.
	tick := min(interval, 2*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	var lastDirs time.Time
	for {
		snap := reg.Snapshot()
		dirs := time.Since(lastDirs) >= interval
		if dirs {
			lastDirs = time.Now()
		}
		for _, s := range snap.Sites {
			switch s.Source.Type {
			case sites.SourceDir:
				if !dirs || m == nil {
					continue
				}
				n, err := sites.DirUsage(s.Source.Path)
				if err != nil {
					log.Warn("measuring site storage", slog.String("site", s.ID), slog.Any("err", err))
				}
				m.Counters(s.Org, s.ID, sites.SourceDir).SetStorage(n)
			case sites.SourceGitea:
				if g != nil && m != nil {
					measureRepo(ctx, g.Repo(s.Source.Owner, s.Source.Repo, s.Source.Branch), m, s.Org, s.ID, log)
				}
			}
		}
		if g != nil {
			for _, r := range g.Known() {
				// Pages repositories: the org paying for the owner, the
				// repository's name as the site (as the proxy counts them).
				// A repository with custom domains has a registry site,
				// measured above: measure it once, not twice.
				if m != nil && snap.Sites[sites.PagesSiteID(r.Owner(), r.RepoName())] == nil {
					measureRepo(ctx, r, m, snap.OrgForGiteaOwner(r.Owner()), r.Name(), log)
				}
				if claim != nil {
					claim(r)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func measureRepo(ctx context.Context, r *sites.GiteaRepo, m *meter.Meter, org, site string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := r.TreeSize(ctx)
	if err != nil {
		log.Warn("measuring repository storage", slog.String("repo", r.Name()), slog.Any("err", err))
		return
	}
	m.Counters(org, site, sites.SourceGitea).SetStorage(n)
}
