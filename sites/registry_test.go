package sites

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/tollgate-edge/tollgate/store"
)

// The store's drivers implement the registry's Store (store.Op is Change).
var (
	_ Store     = (*store.Bolt)(nil)
	_ Store     = (*store.RedisKV)(nil)
	_ versioned = (*store.RedisKV)(nil)
)

func openStore(t *testing.T, path string) *store.Bolt {
	t.Helper()
	st, err := store.Open(store.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newRegistry(t *testing.T) (*Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "reg.db")
	r, err := New(context.Background(), openStore(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

func TestRegistryLifecycleAndReload(t *testing.T) {
	ctx := context.Background()
	r, path := newRegistry(t)
	if _, err := r.Plan("free"); err != nil {
		t.Fatalf("built-in free plan: %v", err)
	}
	var seen []uint64
	r.OnChange(func(s *Snapshot, _ *Delta) { seen = append(seen, s.Version) })

	mustNoErr(t, func() error { _, err := r.PutPlan(ctx, Plan{Name: "pro", Sites: 2, Domains: 2}); return err }())
	mustNoErr(t, func() error { _, err := r.CreateOrg(ctx, Org{ID: "acme", Name: "Acme", Plan: "pro"}); return err }())
	mustNoErr(t, func() error {
		_, err := r.CreateSite(ctx, Site{ID: "www", Org: "acme", Source: Source{Type: SourceDir, Path: t.TempDir()}})
		return err
	}())
	d, err := r.AttachDomain(ctx, "www", "WWW.Acme.Example.")
	mustNoErr(t, err)
	if d.Name != "www.acme.example" || d.Status != DomainVerified {
		t.Fatalf("domain = %+v", d)
	}
	if len(seen) != 5 || seen[4] <= seen[0] {
		t.Fatalf("subscriber saw versions %v; want the initial one and 4 writes", seen)
	}

	// The registry survives a restart intact.
	st := r.st.(*store.Bolt)
	st.Close()
	r2, err := New(ctx, openStore(t, path))
	mustNoErr(t, err)
	s := r2.Snapshot()
	if s.Plans.Get("pro") == nil || s.Orgs.Get("acme") == nil || s.Sites.Get("www") == nil || s.Domains.Get("www.acme.example") == nil {
		t.Fatalf("reloaded snapshot is missing records: %+v", s)
	}
	if got := s.Orgs.Get("acme").State; got != StateActive {
		t.Fatalf("org state = %q", got)
	}
	// Deleting the site detaches its domains; then the org can go.
	if err := r2.DeleteOrg(ctx, "acme"); !errors.Is(err, ErrConflict) {
		t.Fatalf("DeleteOrg with sites: %v; want ErrConflict", err)
	}
	mustNoErr(t, r2.DeleteSite(ctx, "www"))
	if _, err := r2.Domain("www.acme.example"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("domain after site delete: %v", err)
	}
	mustNoErr(t, r2.DeleteOrg(ctx, "acme"))
}

func TestRegistryErrors(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	_, _ = r.PutPlan(ctx, Plan{Name: "one", Sites: 1, Domains: 1})
	_, _ = r.CreateOrg(ctx, Org{ID: "a", Plan: "one"})
	_, _ = r.CreateOrg(ctx, Org{ID: "b", Plan: "free"})
	dir := t.TempDir()
	_, _ = r.CreateSite(ctx, Site{ID: "s1", Org: "a", Source: Source{Type: SourceDir, Path: dir}})
	_, _ = r.CreateSite(ctx, Site{ID: "s2", Org: "b", Source: Source{Type: SourceUpstream, URL: "http://127.0.0.1:9"}})
	_, _ = r.AttachDomain(ctx, "s1", "a.example")

	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"plan bad name", func() error { _, err := r.PutPlan(ctx, Plan{Name: "Bad Name"}); return err }, ErrInvalid},
		{"plan negative", func() error { _, err := r.PutPlan(ctx, Plan{Name: "x", Sites: -1}); return err }, ErrInvalid},
		{"plan hard limit", func() error { _, err := r.PutPlan(ctx, Plan{Name: "x", HardLimitPercent: 50}); return err }, ErrInvalid},
		{"org unknown plan", func() error { _, err := r.CreateOrg(ctx, Org{ID: "c", Plan: "nope"}); return err }, ErrInvalid},
		{"org duplicate", func() error { _, err := r.CreateOrg(ctx, Org{ID: "a", Plan: "free"}); return err }, ErrConflict},
		{"org bad id", func() error { _, err := r.CreateOrg(ctx, Org{ID: "../x", Plan: "free"}); return err }, ErrInvalid},
		{"org bad state", func() error { s := "gone"; _, err := r.UpdateOrg(ctx, "a", OrgPatch{State: &s}); return err }, ErrInvalid},
		{"org patch unknown plan", func() error { p := "nope"; _, err := r.UpdateOrg(ctx, "a", OrgPatch{Plan: &p}); return err }, ErrInvalid},
		{"org patch missing", func() error { _, err := r.UpdateOrg(ctx, "zz", OrgPatch{}); return err }, ErrNotFound},
		{"site unknown org", func() error {
			_, err := r.CreateSite(ctx, Site{ID: "s9", Org: "zz", Source: Source{Type: SourceDir, Path: dir}})
			return err
		}, ErrNotFound},
		{"site relative dir", func() error {
			_, err := r.CreateSite(ctx, Site{ID: "s9", Org: "b", Source: Source{Type: SourceDir, Path: "rel"}})
			return err
		}, ErrInvalid},
		{"site bad url", func() error {
			_, err := r.CreateSite(ctx, Site{ID: "s9", Org: "b", Source: Source{Type: SourceUpstream, URL: "ftp://x"}})
			return err
		}, ErrInvalid},
		{"site bad type", func() error {
			_, err := r.CreateSite(ctx, Site{ID: "s9", Org: "b", Source: Source{Type: "git"}})
			return err
		}, ErrInvalid},
		{"site limit", func() error {
			_, err := r.CreateSite(ctx, Site{ID: "s3", Org: "a", Source: Source{Type: SourceDir, Path: dir}})
			return err
		}, ErrConflict},
		{"site duplicate", func() error {
			_, err := r.CreateSite(ctx, Site{ID: "s1", Org: "b", Source: Source{Type: SourceDir, Path: dir}})
			return err
		}, ErrConflict},
		{"domain taken", func() error { _, err := r.AttachDomain(ctx, "s2", "A.Example."); return err }, ErrConflict},
		{"domain limit", func() error { _, err := r.AttachDomain(ctx, "s1", "b.example"); return err }, ErrConflict},
		{"domain malformed", func() error { _, err := r.AttachDomain(ctx, "s2", "bad domain"); return err }, ErrInvalid},
		{"domain ip", func() error { _, err := r.AttachDomain(ctx, "s2", "192.0.2.1"); return err }, ErrInvalid},
		{"domain unknown site", func() error { _, err := r.AttachDomain(ctx, "zz", "c.example"); return err }, ErrNotFound},
		{"detach unknown", func() error { return r.DetachDomain(ctx, "nope.example") }, ErrNotFound},
		{"delete unknown site", func() error { return r.DeleteSite(ctx, "zz") }, ErrNotFound},
		{"delete unknown org", func() error { return r.DeleteOrg(ctx, "zz") }, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := r.Snapshot().Version
			err := tt.do()
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v; want %v", err, tt.want)
			}
			if after := r.Snapshot().Version; after != before {
				t.Fatalf("a failed write changed the snapshot: version %d -> %d", before, after)
			}
		})
	}
	var le *LimitError
	_, err := r.CreateSite(ctx, Site{ID: "s3", Org: "a", Source: Source{Type: SourceDir, Path: dir}})
	if !errors.As(err, &le) || le.Limit != "sites" || le.Max != 1 {
		t.Fatalf("site limit error = %#v", err)
	}
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestGiteaOwners(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	mustNoErr(t, r.EnsureGiteaOrg(ctx, "alice", "free"))
	mustNoErr(t, r.EnsureGiteaOrg(ctx, "alice", "free")) // idempotent
	if got := r.Snapshot().OrgForGiteaOwner("alice"); got != "gitea-alice" || r.Snapshot().Orgs.Get(got) == nil {
		t.Fatalf("synthetic org %q", got)
	}
	_, err := r.CreateOrg(ctx, Org{ID: "team", Plan: "free"})
	mustNoErr(t, err)
	owners := []string{"alice", "bob", "bob"}
	o, err := r.UpdateOrg(ctx, "team", OrgPatch{GiteaOwners: &owners})
	mustNoErr(t, err)
	if len(o.GiteaOwners) != 2 {
		t.Fatalf("owners not deduplicated: %v", o.GiteaOwners)
	}
	if got := r.Snapshot().OrgForGiteaOwner("alice"); got != "team" {
		t.Fatalf("alice's pages are paid by %q; want team", got)
	}
	_, err = r.CreateOrg(ctx, Org{ID: "other", Plan: "free", GiteaOwners: []string{"bob"}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("owner claimed twice: %v", err)
	}
	bad := []string{"Not Valid"}
	if _, err := r.UpdateOrg(ctx, "team", OrgPatch{GiteaOwners: &bad}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid owner: %v", err)
	}
}

var _ versionedApplier = (*store.RedisKV)(nil)

// The change log's entries are what Follow reads.
var _ = func(e store.LogEntry) Logged { return e }
