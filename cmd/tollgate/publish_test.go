package main

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// TestPublishTargets: the sites a repository branch is held as, as the
// tender meters them, kept in step with registry writes.
func TestPublishTargets(t *testing.T) {
	ctx := context.Background()
	reg, err := sites.New(ctx, storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.PutPlan(ctx, sites.Plan{Name: "p"}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{"acme", "team"} {
		if _, err := reg.CreateOrg(ctx, sites.Org{ID: o, Plan: "p"}); err != nil {
			t.Fatal(err)
		}
	}
	site := func(org, id, owner, repo, branch string) {
		t.Helper()
		src := sites.Source{Type: sites.SourceGitea, Owner: owner, Repo: repo, Branch: branch}
		if _, err := reg.CreateSite(ctx, sites.Site{ID: id, Org: org, Source: src}); err != nil {
			t.Fatal(err)
		}
	}
	site("acme", "blog", "alice", "blog", "main")
	g := newPublishGate(reg) // indexes what exists, then follows writes
	site("team", "teamblog", "alice", "blog", "main")
	site("team", "other", "alice", "blog", "dev")
	site("acme", gitea.PagesSiteID("alice", "pages"), "alice", "pages", "")

	tests := []struct {
		name string
		p    gitea.Publish
		want []publishTarget
	}{
		{"two gitea sites and the pages repository", gitea.Publish{Owner: "alice", Repo: "blog", Branch: "main", Name: "alice/blog@main"},
			[]publishTarget{{"acme", "blog"}, {"team", "teamblog"}, {"gitea-alice", "alice/blog@main"}}},
		{"another branch", gitea.Publish{Owner: "alice", Repo: "blog", Branch: "dev", Name: "alice/blog@dev"},
			[]publishTarget{{"team", "other"}, {"gitea-alice", "alice/blog@dev"}}},
		{"pages repository with its registry site", gitea.Publish{Owner: "alice", Repo: "pages", Name: "alice/pages"},
			[]publishTarget{{"acme", "gitea-alice-pages"}}},
		{"pages repository only", gitea.Publish{Owner: "bob", Repo: "pages", Name: "bob/pages"},
			[]publishTarget{{"gitea-bob", "bob/pages"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.targets(tt.p); !sameTargets(got, tt.want) {
				t.Fatalf("targets = %v; want %v", got, tt.want)
			}
		})
	}

	if err := reg.DeleteSite(ctx, "blog"); err != nil {
		t.Fatal(err)
	}
	want := []publishTarget{{"team", "teamblog"}, {"gitea-alice", "alice/blog@main"}}
	if got := g.targets(tests[0].p); !sameTargets(got, want) {
		t.Fatalf("after a delete: %v; want %v", got, want)
	}
	// Without a guard (billing not started) a head waits for it until its
	// deadline, then is refused: the served commit stays.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := g.AllowPublish(wctx, tests[0].p); !errors.Is(err, errNoGuard) {
		t.Fatalf("AllowPublish without a guard: %v; want errNoGuard", err)
	}
}

func sameTargets(a, b []publishTarget) bool {
	less := func(x, y publishTarget) int {
		if x.org+"/"+x.site < y.org+"/"+y.site {
			return -1
		}
		return 1
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, less)
	slices.SortFunc(b, less)
	return slices.Equal(a, b)
}
