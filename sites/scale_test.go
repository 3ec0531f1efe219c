package sites

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// bigSnapshot is a registry of n sites with a domain each: in orgs of one
// site each, or all in one org.
func bigSnapshot(n int, oneOrg bool) *Snapshot {
	plans := []*Plan{&FreePlan}
	var orgs []*Org
	var sites []*Site
	var domains []*Domain
	for i := range n {
		org := "org"
		if !oneOrg {
			org = fmt.Sprintf("org-%d", i)
		}
		orgs = append(orgs, &Org{ID: org, Plan: "free", State: StateActive})
		id := fmt.Sprintf("site-%d", i)
		sites = append(sites, &Site{ID: id, Org: org, Source: Source{Type: SourceDir, Path: "/srv"}})
		name := fmt.Sprintf("www.site-%d.example", i)
		domains = append(domains, &Domain{Name: name, Site: id, Status: DomainVerified})
	}
	return snapshotOf(plans, byKey(orgs, orgID), byKey(sites, siteID), byKey(domains, domainName))
}

// TestWriteCostIndependentOfSize: a write (a new org, site and domain, then
// a changed org and a deleted site) copies about as many records into the
// next snapshot with 100,000 sites as with 1,000: the shards it touches,
// never the registry. (Before, every write copied every record.)
func TestWriteCostIndependentOfSize(t *testing.T) {
	for _, oneOrg := range []bool{false, true} {
		cost := map[int]int{}
		for _, n := range []int{1000, 100_000} {
			snap := bigSnapshot(n, oneOrg)
			org := "new-org"
			if oneOrg {
				org = "org"
			}
			w := newTx(snap)
			w.putOrg(&Org{ID: org, Plan: "free", State: StateActive, GiteaOwners: []string{"alice"}})
			w.putSite(&Site{ID: "new-site", Org: org, Source: Source{Type: SourceDir, Path: "/srv"}})
			w.putDomain(&Domain{Name: "new.example", Site: "new-site", Status: DomainVerified})
			w.deleteDomain("www.site-7.example")
			w.deleteSite("site-7")
			cost[n] = w.copied()
			next := w.snapshot()
			if next.Sites.Len() != n || next.Domains.Len() != n || next.Sites.Get("site-7") != nil ||
				snap.Sites.Get("site-7") == nil || next.OrgForGiteaOwner("alice") != org {
				t.Fatalf("n=%d: the write did not apply as asked, or changed the snapshot it started from", n)
			}
		}
		t.Logf("oneOrg=%v: records copied by one write: %v", oneOrg, cost)
		if cost[100_000] > 4*1024 || cost[100_000] > 10*cost[1000]+2048 {
			t.Errorf("oneOrg=%v: a write copied %d records at 1,000 sites and %d at 100,000: grows with the registry",
				oneOrg, cost[1000], cost[100_000])
		}
	}
}

// TestIndexesFollowWrites: after any sequence of writes, the indexes a
// write keeps in step (sites of an org, domains of a site, Gitea owners)
// equal the ones computed from the records, in the published snapshot and
// in one loaded from the store.
func TestIndexesFollowWrites(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	mustNoErr(t, func() error { _, err := r.PutPlan(ctx, Plan{Name: "big"}); return err }())
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(format string, n int) string { return fmt.Sprintf(format, rng.IntN(n)) }
	for range 400 {
		var err error
		switch rng.IntN(7) {
		case 0:
			_, err = r.CreateOrg(ctx, Org{ID: pick("o%d", 6), Plan: "big", GiteaOwners: []string{pick("u%d", 8)}})
		case 1:
			owners := []string{pick("u%d", 8), pick("u%d", 8)}
			_, err = r.UpdateOrg(ctx, pick("o%d", 6), OrgPatch{GiteaOwners: &owners})
		case 2:
			err = r.DeleteOrg(ctx, pick("o%d", 6))
		case 3, 4:
			_, err = r.CreateSite(ctx, Site{ID: pick("s%d", 20), Org: pick("o%d", 6), Source: Source{Type: SourceDir, Path: "/srv"}})
		case 5:
			_, err = r.AttachDomain(ctx, pick("s%d", 20), pick("d%d.example", 40))
		case 6:
			if rng.IntN(2) == 0 {
				err = r.DeleteSite(ctx, pick("s%d", 20))
			} else {
				err = r.DetachDomain(ctx, pick("d%d.example", 40))
			}
		}
		if err != nil && !isExpected(err) {
			t.Fatal(err)
		}
		checkIndexes(t, r.Snapshot())
	}
	r2, err := New(ctx, r.st) // loaded from the store
	mustNoErr(t, err)
	checkIndexes(t, r2.Snapshot())
	if r.Snapshot().Sites.Len() == 0 || r.Snapshot().Domains.Len() == 0 {
		t.Fatal("the random writes left no sites or domains: the test checked nothing")
	}
}

func isExpected(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict)
}

func checkIndexes(t *testing.T, s *Snapshot) {
	t.Helper()
	orgs := map[string][]string{}
	for id, site := range s.Sites.All() {
		orgs[site.Org] = append(orgs[site.Org], id)
	}
	for org := range s.Orgs.All() {
		want := orgs[org]
		slices.Sort(want)
		if got := s.SitesOf(org); !slices.Equal(got, want) {
			t.Fatalf("SitesOf(%s) = %v, want %v", org, got, want)
		}
	}
	bySite := map[string][]string{}
	for name, d := range s.Domains.All() {
		bySite[d.Site] = append(bySite[d.Site], name)
	}
	for site := range s.Sites.All() {
		want := bySite[site]
		slices.Sort(want)
		if got := s.DomainsOf(site); !slices.Equal(got, want) {
			t.Fatalf("DomainsOf(%s) = %v, want %v", site, got, want)
		}
	}
	owners := map[string]string{}
	for id, o := range s.Orgs.All() {
		for _, u := range o.GiteaOwners {
			owners[u] = id
		}
	}
	got := maps.Collect(s.owners.All())
	if !maps.Equal(got, owners) {
		t.Fatalf("gitea owners index = %v, want %v", got, owners)
	}
}

func BenchmarkCreateSiteAt200k(b *testing.B) {
	snap := bigSnapshot(100_000, false)
	for i := 0; b.Loop(); i++ {
		w := newTx(snap)
		id := fmt.Sprintf("new-%d", i)
		w.putOrg(&Org{ID: id, Plan: "free", State: StateActive})
		w.putSite(&Site{ID: id, Org: id, Source: Source{Type: SourceDir, Path: "/srv"}})
		w.putDomain(&Domain{Name: id + ".example", Site: id, Status: DomainVerified})
		snap = w.snapshot()
	}
}
