package billing

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// orgStorage is a StorageReader with set values.
type orgStorage struct {
	mu sync.Mutex
	m  map[string]int64
	// unmeasured: StorageByOrg answers not ok (a node just started).
	unmeasured bool
	// single and all count the calls of OrgStorage and StorageByOrg.
	single, all int
}

func (s *orgStorage) OrgStorage(org string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.single++
	return s.m[org]
}

func (s *orgStorage) StorageByOrgOf(need func(string) bool) (map[string]int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all++
	if s.unmeasured {
		return nil, false
	}
	m := maps.Clone(s.m)
	maps.DeleteFunc(m, func(org string, _ int64) bool { return !need(org) })
	return m, true
}

func (s *orgStorage) set(org string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[org] = n
}

// TestPublishGuard: the decision (org storage − published + new against
// storage_bytes), and what a refusal records: one event and one hook per
// refused commit, the site's PublishBlock until it publishes or the site is
// deleted, kept in the store across a restart.
func TestPublishGuard(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	hooks := &recorder{}
	stored := &orgStorage{m: map[string]int64{"acme": 900, "roomy": 5_000_000}}
	now := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	b, err := New(ctx, Config{Plans: []PlanConfig{{Name: "tiny", StorageBytes: 1000}, {Name: "unlimited"}}},
		Options{Sites: reg, Store: st, Storage: stored, Hooks: hooks, Metrics: prometheus.NewRegistry(),
			Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []sites.Org{{ID: "acme", Plan: "tiny"}, {ID: "roomy", Plan: "unlimited"}} {
		if _, err := reg.CreateOrg(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	blog := sites.Source{Type: sites.SourceGitea, Owner: "alice", Repo: "blog", Branch: "main"}
	if _, err := reg.CreateSite(ctx, sites.Site{ID: "blog", Org: "acme", Source: blog}); err != nil {
		t.Fatal(err)
	}
	g, err := NewPublishGuard(ctx, b)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		c    PublishCheck
		ok   bool
	}{
		{"within", PublishCheck{Org: "acme", Site: "blog", Commit: "c2", Published: "c1", Bytes: 300, PublishedBytes: 400}, true},
		{"over by 100", PublishCheck{Org: "acme", Site: "blog", Commit: "c2", Published: "c1", Bytes: 500, PublishedBytes: 300}, false},
		{"at the quota", PublishCheck{Org: "acme", Site: "blog", Commit: "c2", Published: "c1", Bytes: 400, PublishedBytes: 300}, true},
		{"over", PublishCheck{Org: "acme", Site: "blog", Commit: "c3", Published: "c1", Bytes: 2000, PublishedBytes: 400}, false},
		{"more published than measured", PublishCheck{Org: "acme", Site: "blog", Commit: "c4", Published: "c1", Bytes: 900, PublishedBytes: 5000}, true},
		{"no storage quota", PublishCheck{Org: "roomy", Site: "big", Commit: "c2", Published: "c1", Bytes: 1 << 40}, true},
		{"org not in the registry", PublishCheck{Org: "gitea-nobody", Site: "nobody/pages", Commit: "c2", Bytes: 1 << 40}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := g.AllowPublish(ctx, tt.c)
			if tt.ok != (err == nil) || err != nil && !errors.Is(err, ErrStorageQuota) {
				t.Fatalf("AllowPublish(%+v) = %v; want ok %v", tt.c, err, tt.ok)
			}
		})
	}

	// Refused twice ("over by 100" is c2, "over" c3): one event and
	// one hook per commit; the block shows the latest.
	over := tests[3].c
	if err := g.AllowPublish(ctx, over); err == nil {
		t.Fatal("asked again: allowed")
	}
	if n := hooks.count("quota.storage_exceeded"); n != 2 {
		t.Fatalf("%d quota.storage_exceeded hooks; want 2 (c2, c3)", n)
	}
	hooks.mu.Lock()
	last := hooks.events[len(hooks.events)-1]
	hooks.mu.Unlock()
	if last.ID != "quota.storage_exceeded:acme:blog:c3" || last.Data["used"] != int64(2500) || last.Data["limit"] != int64(1000) {
		t.Fatalf("hook %+v", last)
	}
	events, err := b.Events(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var publish []Event
	for _, e := range events {
		if e.Field == "publish" {
			publish = append(publish, e)
		}
	}
	if len(publish) != 2 || publish[1].From != "c1" || publish[1].To != "c3" || publish[1].Actor != ActorBilling ||
		publish[1].Ref != "blog" || !strings.Contains(publish[1].Cause, "2500") {
		t.Fatalf("publish events %+v; want 2, the last c1 → c3 by billing with the sizes", publish)
	}
	blk, ok := g.PublishBlocked("blog")
	if !ok || blk.Commit != "c3" || !blk.At.Equal(now) || !strings.Contains(blk.Reason, "over the 1000 of plan tiny") {
		t.Fatalf("PublishBlocked = %+v, %v", blk, ok)
	}

	// A restart (a guard built again on the same store) shows the block
	// and does not record the same refusal again.
	g, err = NewPublishGuard(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if blk2, ok := g.PublishBlocked("blog"); !ok || blk2 != blk {
		t.Fatalf("PublishBlocked after a restart = %+v, %v; want %+v", blk2, ok, blk)
	}
	if err := g.AllowPublish(ctx, over); err == nil || hooks.count("quota.storage_exceeded") != 2 {
		t.Fatalf("asked again after a restart: %v, %d hooks; want refused, still 2 hooks", err, hooks.count("quota.storage_exceeded"))
	}
	g.Published(ctx, "blog")
	if blk, ok := g.PublishBlocked("blog"); ok {
		t.Fatalf("after a publish: %+v", blk)
	}
	if g, _ = NewPublishGuard(ctx, b); g == nil || len(g.blocked) != 0 {
		t.Fatalf("blocks after a publish and a restart: %v", g)
	}

	// A registry site's block goes with the site, on disk too.
	shopSrc := sites.Source{Type: sites.SourceGitea, Owner: "alice", Repo: "shop", Branch: "main"}
	if _, err := reg.CreateSite(ctx, sites.Site{ID: "shop", Org: "acme", Source: shopSrc}); err != nil {
		t.Fatal(err)
	}
	shop := PublishCheck{Org: "acme", Site: "shop", Commit: "s2", Published: "s1", Bytes: 5000}
	if err := g.AllowPublish(ctx, shop); err == nil {
		t.Fatal("shop over the quota: allowed")
	}
	if err := reg.DeleteSite(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if blk, ok := g.PublishBlocked("shop"); ok {
		t.Fatalf("block of a deleted site: %+v", blk)
	}
	if g, _ = NewPublishGuard(ctx, b); g == nil || len(g.blocked) != 0 {
		t.Fatalf("blocks after a site deletion and a restart: %v", g)
	}
}

// TestPublishRefusalEventBeforeBlock: a refusal's org event is written
// before its block shows, so whoever sees publish_blocked finds the event
// (a test that waited for the block read the events one too short).
func TestPublishRefusalEventBeforeBlock(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(ctx, Config{Plans: []PlanConfig{{Name: "tiny", StorageBytes: 1000}}},
		Options{Sites: reg, Store: st, Storage: &orgStorage{m: map[string]int64{"acme": 900}}, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "tiny"}); err != nil {
		t.Fatal(err)
	}
	g, err := NewPublishGuard(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var blockedAtEvent []bool
	reg.OnChange(func(_ *sites.Snapshot, d *sites.Delta) {
		if d != nil && len(d.Orgs) > 0 { // the refusal's event is written with the org
			g.mu.Lock() // as PublishBlocked would, without the registry's lock order
			_, shown := g.blocked["blog"]
			g.mu.Unlock()
			blockedAtEvent = append(blockedAtEvent, shown)
		}
	})
	c := PublishCheck{Org: "acme", Site: "blog", Commit: "c2", Published: "c1", Bytes: 5000, PublishedBytes: 100}
	if err := g.AllowPublish(ctx, c); !errors.Is(err, ErrStorageQuota) {
		t.Fatalf("AllowPublish: %v", err)
	}
	if len(blockedAtEvent) != 1 || blockedAtEvent[0] {
		t.Fatalf("block shown when the event was written: %v; want [false]", blockedAtEvent)
	}
	if blk, ok := g.PublishBlocked("blog"); !ok || blk.Commit != "c2" {
		t.Fatalf("after the refusal: block %+v %v", blk, ok)
	}
	events, err := b.Events(ctx, "acme")
	if err != nil || events[len(events)-1].Field != "publish" {
		t.Fatalf("events %+v (%v)", events, err)
	}
}
