package sites

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/store"
)

// countingConn counts the bytes a Redis client reads.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestFollowReadsTheChange: a node that follows another's writes through
// the change log reads from Redis what the write changed, whatever the
// registry's size (before, each write made every node read the whole
// registry, HGETALL of each bucket). Asserted on the bytes node B's client
// reads for one write of node A, at 100 and at 3,000 sites.
func TestFollowReadsTheChange(t *testing.T) {
	redistest.SkipShort(t)
	ctx := context.Background()
	read := map[int]int64{}
	for _, n := range []int{100, 3000} {
		rs := redistest.Start(t)
		var got atomic.Int64
		rcB := redis.NewClient(&redis.Options{Addr: rs.Addr(), Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{c, &got}, nil
		}})
		rcA := redis.NewClient(&redis.Options{Addr: rs.Addr()})
		t.Cleanup(func() { rcA.Close(); rcB.Close() })
		kvA, kvB := store.NewRedisKV(rcA, nil), store.NewRedisKV(rcB, nil)

		a, err := New(ctx, kvA)
		mustNoErr(t, err)
		mustNoErr(t, func() error { _, err := a.PutPlan(ctx, Plan{Name: "big"}); return err }())
		// The registry, written in one go (a reset entry in the log).
		var ops []Change
		for i := range n {
			org, site, host := fmt.Sprintf("o%d", i), fmt.Sprintf("s%d", i), fmt.Sprintf("www.s%d.example", i)
			ops = append(ops, putOp(bucketOrgs, org, &Org{ID: org, Plan: "big", State: StateActive}),
				putOp(bucketSites, site, &Site{ID: site, Org: org, Source: Source{Type: SourceDir, Path: "/srv"}}),
				putOp(bucketDomains, host, &Domain{Name: host, Site: site, Status: DomainVerified, Via: ViaOperator}))
		}
		mustNoErr(t, kvA.Apply(ctx, ops...))
		_, err = a.Reload(ctx)
		mustNoErr(t, err)
		b, err := New(ctx, kvB)
		mustNoErr(t, err)
		if b.Snapshot().Sites.Len() != n {
			t.Fatalf("node b loaded %d sites, want %d", b.Snapshot().Sites.Len(), n)
		}

		// One write on node A: a site with a domain (two log entries).
		_, err = a.CreateSite(ctx, Site{ID: "new", Org: "o1", Source: Source{Type: SourceDir, Path: "/srv"}})
		mustNoErr(t, err)
		_, err = a.AttachDomain(ctx, "new", "new.example")
		mustNoErr(t, err)

		got.Store(0)
		entries, err := kvB.ReadLog(ctx, b.Seen(), 1000, 0)
		mustNoErr(t, err)
		if !b.Follow(entries) {
			t.Fatalf("node b could not follow the log: %+v", entries)
		}
		read[n] = got.Load()
		if d, _ := b.Domain("new.example"); d.Site != "new" || b.Seen() != a.Seen() {
			t.Fatalf("node b after following: domain %+v, version %d (node a %d)", d, b.Seen(), a.Seen())
		}
		// Its own writes come back through the log too: skipped by version.
		entries, err = kvA.ReadLog(ctx, a.Seen()-2, 1000, 0)
		mustNoErr(t, err)
		before := a.Snapshot()
		if !a.Follow(entries) || a.Snapshot() != before {
			t.Fatal("node a re-applied its own writes read back from the log")
		}
	}
	t.Logf("bytes node b read from redis to follow one write of node a: %v", read)
	if read[3000] > read[100]+64 || read[3000] > 4096 {
		t.Errorf("following one write read %d bytes at 100 sites, %d at 3,000: grows with the registry", read[100], read[3000])
	}
}

// TestFollowGapReloads: a node whose next version is not in the log (it was
// trimmed past it, or a write was too large to log) is told to reload, and
// Reload brings it up to date.
func TestFollowGapReloads(t *testing.T) {
	redistest.SkipShort(t)
	ctx := context.Background()
	rs := redistest.Start(t)
	rc := rs.NewClient(t)
	kv := store.NewRedisKV(rc, nil)
	a, err := New(ctx, kv)
	mustNoErr(t, err)
	b, err := New(ctx, kv)
	mustNoErr(t, err)
	mustNoErr(t, func() error { _, err := a.PutPlan(ctx, Plan{Name: "big"}); return err }())
	var big []Change
	for i := range 2500 { // too large to log: a reset entry
		id := fmt.Sprintf("o%d", i)
		big = append(big, putOp(bucketOrgs, id, &Org{ID: id, Plan: "big", State: StateActive}))
	}
	mustNoErr(t, kv.Apply(ctx, big...))
	_, err = a.CreateOrg(ctx, Org{ID: "after", Plan: "big"})
	mustNoErr(t, err)

	entries, err := kv.ReadLog(ctx, b.Seen(), 1000, 0)
	mustNoErr(t, err)
	if len(entries) != 3 || b.Follow(entries) {
		t.Fatalf("following %d entries across a reset entry succeeded; want a reload", len(entries))
	}
	if b.Snapshot().Plans.Get("big") == nil {
		t.Error("the entries before the reset entry were not applied")
	}
	if _, err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := kv.Version(ctx); b.Snapshot().Orgs.Len() != 2501 || b.Seen() != v {
		t.Errorf("after the reload: %d orgs, version %d; want 2501 and %d", b.Snapshot().Orgs.Len(), b.Seen(), v)
	}
	// A version the log does not start at (trimmed past it).
	if b.Follow([]Logged{{Version: b.Seen() + 2}}) {
		t.Error("an entry two versions ahead was applied")
	}
}

// slowScan is a Redis registry store whose scan of the sites bucket, once
// armed, waits until released: a reload that is reading the records.
type slowScan struct {
	*store.RedisKV
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowScan) Scan(ctx context.Context, bucket string, fn func(k, v []byte) error) error {
	if bucket == bucketSites && s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return s.RedisKV.Scan(ctx, bucket, fn)
}

// TestOwnWritesDuringReloadAreNoLoss: a node's own writes while it reloads
// the registry raise the store's version past the one the reload read; that
// is no loss (it was taken for one: "version went back from 73 to 69", the
// node refusing every write until a restore, seen in the registry-cluster
// benchmark's import), and the writes are in the registry after the log is
// followed.
func TestOwnWritesDuringReloadAreNoLoss(t *testing.T) {
	redistest.SkipShort(t)
	ctx := context.Background()
	rs := redistest.Start(t)
	rc := rs.NewClient(t)
	kv := store.NewRedisKV(rc, nil)
	st := &slowScan{RedisKV: kv, entered: make(chan struct{}), release: make(chan struct{})}
	r, err := New(ctx, st)
	mustNoErr(t, err)
	mustNoErr(t, func() error { _, err := r.PutPlan(ctx, Plan{Name: "big"}); return err }())

	st.armed.Store(true)
	done := make(chan error, 1)
	go func() { _, err := r.Reload(ctx); done <- err }()
	<-st.entered
	for _, id := range []string{"a", "b", "c"} {
		_, err := r.CreateOrg(ctx, Org{ID: id, Plan: "big"})
		mustNoErr(t, err)
	}
	close(st.release)
	if err := <-done; err != nil || r.Lost() != nil {
		t.Fatalf("reload with the node's own writes in between: %v, lost %+v", err, r.Lost())
	}
	entries, err := kv.ReadLog(ctx, r.Seen(), 100, 0)
	mustNoErr(t, err)
	if !r.Follow(entries) {
		t.Fatal("following the log after the reload failed")
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := r.Org(id); err != nil {
			t.Errorf("org %s, written during the reload: %v", id, err)
		}
	}
	if v, _ := kv.Version(ctx); r.Seen() != v {
		t.Errorf("seen %d, store version %d", r.Seen(), v)
	}
}
