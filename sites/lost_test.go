package sites

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/store"
)

// versionedStore is a shared store as Redis is to a node: it counts its
// writes, and a test can swap what it holds (a Redis restarted empty, or
// restored) under the registry.
type versionedStore struct {
	st  *store.Bolt
	ver int64
}

func (s *versionedStore) Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error {
	return s.st.Scan(ctx, bucket, fn)
}

func (s *versionedStore) Apply(ctx context.Context, ops ...store.Op) error {
	if err := s.st.Apply(ctx, ops...); err != nil {
		return err
	}
	s.ver++
	return nil
}

func (s *versionedStore) Version(context.Context) (int64, error) { return s.ver, nil }

// copyInto writes every registry record of from into s, in one Apply (as a
// restore does).
func (s *versionedStore) copyInto(t *testing.T, from *store.Bolt) {
	t.Helper()
	var ops []store.Op
	for _, b := range []string{bucketPlans, bucketOrgs, bucketSites, bucketDomains} {
		mustNoErr(t, from.Scan(context.Background(), b, func(k, v []byte) error {
			ops = append(ops, store.Put(b, string(k), append([]byte(nil), v...)))
			return nil
		}))
	}
	mustNoErr(t, s.Apply(context.Background(), ops...))
}

// TestRegistryKeepsSnapshotWhenStoreLosesIt: a store that comes back empty,
// or at an older version, is not published; writes are refused until the
// store holds the node's records again; ordinary writes by other nodes
// still arrive.
func TestRegistryKeepsSnapshotWhenStoreLosesIt(t *testing.T) {
	ctx := context.Background()
	fresh := func(name string) *store.Bolt { return openStore(t, filepath.Join(t.TempDir(), name)) }

	// setup returns a registry with one org, site and domain on a shared
	// store, and the store's original contents.
	setup := func(t *testing.T) (*Registry, *versionedStore, *store.Bolt) {
		orig := fresh("orig.db")
		vs := &versionedStore{st: orig}
		r, err := New(ctx, vs)
		mustNoErr(t, err)
		_, err = r.CreateOrg(ctx, Org{ID: "acme", Name: "Acme", Plan: "free"})
		mustNoErr(t, err)
		_, err = r.CreateSite(ctx, Site{ID: "www", Org: "acme", Source: Source{Type: SourceDir, Path: t.TempDir()}})
		mustNoErr(t, err)
		_, err = r.AttachDomain(ctx, "www", "www.acme.example")
		mustNoErr(t, err)
		_, err = r.Reload(ctx) // what the watcher does after every write
		mustNoErr(t, err)
		return r, vs, orig
	}

	cases := []struct {
		name   string
		lose   func(t *testing.T, vs *versionedStore, orig *store.Bolt)
		reason string
	}{
		{"restarted empty", func(t *testing.T, vs *versionedStore, _ *store.Bolt) {
			vs.st, vs.ver = fresh("empty.db"), 0
		}, "the registry in the store is empty (version 0, this node loaded version 4)"},
		{"restarted empty, then one write by a new node", func(t *testing.T, vs *versionedStore, _ *store.Bolt) {
			vs.st, vs.ver = fresh("empty.db"), 0
			other, err := New(ctx, vs) // creates the free plan: version 1
			mustNoErr(t, err)
			_, err = other.CreateOrg(ctx, Org{ID: "gitea-bob", Name: "bob", Plan: "free"})
			mustNoErr(t, err)
		}, "the store's registry version went back from 4 to 2"},
		{"failed over to a replica one write behind", func(t *testing.T, vs *versionedStore, orig *store.Bolt) {
			stale := fresh("stale.db")
			vs.st, vs.ver = stale, 0
			vs.copyInto(t, orig)
			mustNoErr(t, vs.Apply(ctx, store.Delete(bucketDomains, "www.acme.example")))
		}, "the store's registry version went back from 4 to 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, vs, orig := setup(t)
			before := r.Snapshot()
			c.lose(t, vs, orig)

			changed, err := r.Reload(ctx)
			if changed || !errors.Is(err, ErrRegistryLost) {
				t.Fatalf("Reload after the loss = %v, %v; want false, ErrRegistryLost", changed, err)
			}
			if r.Snapshot() != before {
				t.Fatal("the lost registry replaced the snapshot")
			}
			loss := r.Lost()
			if loss == nil || loss.Reason != c.reason || loss.Orgs != 1 || loss.Sites != 1 || loss.Domains != 1 {
				t.Fatalf("Lost() = %+v; want reason %q and 1 org, 1 site, 1 domain", loss, c.reason)
			}
			if !strings.Contains(err.Error(), "tollgate store restore") {
				t.Fatalf("the error does not say how to recover: %v", err)
			}
			if org, _, ok := r.DomainOrg("www.acme.example"); !ok || org != "acme" {
				t.Fatal("the domain stopped routing")
			}
			// Writes are refused; another reload keeps refusing.
			if _, err := r.CreateOrg(ctx, Org{ID: "late", Name: "Late", Plan: "free"}); !errors.Is(err, ErrRegistryLost) {
				t.Fatalf("a write during the loss: %v; want ErrRegistryLost", err)
			}
			if _, err := r.Reload(ctx); !errors.Is(err, ErrRegistryLost) || r.Lost() != loss {
				t.Fatalf("second Reload: %v, loss %+v", err, r.Lost())
			}

			// A restore of the node's records ends the loss.
			vs.st, vs.ver = fresh("restored.db"), 0
			vs.copyInto(t, orig)
			changed, err = r.Reload(ctx)
			if changed || err != nil || r.Lost() != nil || r.Snapshot() != before {
				t.Fatalf("Reload after the restore = %v, %v, lost %+v", changed, err, r.Lost())
			}
			// Writes work again, from the restored version on.
			_, err = r.CreateOrg(ctx, Org{ID: "late", Name: "Late", Plan: "free"})
			mustNoErr(t, err)
			if _, err := r.Reload(ctx); err != nil || r.Lost() != nil {
				t.Fatalf("Reload after a write: %v, lost %+v", err, r.Lost())
			}
		})
	}

	t.Run("another node's write is published", func(t *testing.T) {
		r, vs, _ := setup(t)
		other, err := New(ctx, vs)
		mustNoErr(t, err)
		mustNoErr(t, other.DetachDomain(ctx, "www.acme.example"))
		_, err = other.AttachDomain(ctx, "www", "new.acme.example")
		mustNoErr(t, err)
		changed, err := r.Reload(ctx)
		if !changed || err != nil || r.Lost() != nil {
			t.Fatalf("Reload = %v, %v, lost %+v", changed, err, r.Lost())
		}
		if _, _, ok := r.DomainOrg("new.acme.example"); !ok {
			t.Fatal("the other node's domain is not served")
		}
	})

	t.Run("same records at a lower version are no loss", func(t *testing.T) {
		r, vs, orig := setup(t)
		vs.st, vs.ver = fresh("copy.db"), 0
		vs.copyInto(t, orig) // version 1, below 4
		if _, err := r.Reload(ctx); err != nil || r.Lost() != nil {
			t.Fatalf("Reload = %v, lost %+v", err, r.Lost())
		}
	})
}
