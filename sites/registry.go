// Package sites is the registry of what tollgate serves: plans, orgs, sites
// and domains, with the rules their names follow (hostnames, Gitea owners,
// branches, tollgate's own reserved names).
//
// The registry persists every write through a Store, an interface it
// declares in its own terms and that the store package implements; it
// imports no storage driver. It publishes an immutable Snapshot, swapped
// atomically, that the request path reads without locks.
//
// The package kept the name sites when the content sources moved out (to
// sites/content and sites/gitea): most of the code base names its types
// (sites.Org, sites.Site, sites.Registry), and the [sites] config section
// (Config) stays here too.
package sites

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tollgate-edge/tollgate/internal/cowmap"
)

// Store is the durable state the registry needs: scan a bucket, apply a
// batch of changes atomically. *store.Bolt and *store.RedisKV implement it
// (store.Op is Change).
type Store interface {
	// Scan calls fn with every key and value of bucket; a missing bucket
	// is empty. The slices are only valid during the call.
	Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error
	// Apply writes the changes in one transaction: all or none.
	Apply(ctx context.Context, changes ...Change) error
}

// evicter is a Store whose full scan leaves what it read resident in the
// process (a memory-mapped file): Evict releases it. *store.Bolt
// implements it.
type evicter interface {
	Evict(ctx context.Context) error
}

// Change is one write of a batch: Value nil deletes Key from Bucket.
//
// It is an alias of an unnamed struct type, as store.Op is: the two name
// one type, so the store's drivers implement Store without this package
// importing them or the store importing the registry.
type Change = struct {
	Bucket string
	Key    string
	Value  []byte
}

// Bucket names of the registry's records.
const (
	bucketPlans   = "plans"
	bucketOrgs    = "orgs"
	bucketSites   = "sites"
	bucketDomains = "domains"
)

// Registry owns the plans, orgs, sites and domains. Reads go to Snapshot;
// writes are serialized, persisted, then published.
type Registry struct {
	st   Store
	now  func() time.Time
	snap atomic.Pointer[Snapshot]
	// reserved holds tollgate's own hostnames (Reserve); nil: none.
	reserved atomic.Pointer[reservedSet]

	mu   sync.Mutex // serializes writes and subscriber calls
	subs []func(*Snapshot, *Delta)
	// seen is the store's version (see versioned) this registry holds: at
	// the last load, or of the last write it made (persist) or followed
	// (Follow); -1 for a store without one. Guarded by mu.
	seen int64
	// lost is set while the store does not hold the registry this node
	// serves (see Reload); nil otherwise.
	lost atomic.Pointer[Loss]
}

// New loads the registry from st. On an empty store it creates the built-in
// "free" plan (FreePlan).
func New(ctx context.Context, st Store) (*Registry, error) {
	r := &Registry{st: st, now: time.Now}
	var err error
	if r.seen, err = r.storeVersion(ctx); err != nil {
		return nil, err
	}
	snap, err := loadSnapshot(ctx, st)
	if err != nil {
		return nil, err
	}
	r.snap.Store(snap)
	r.evict(ctx)
	if snap.Plans.Len() == 0 {
		if _, err := r.PutPlan(ctx, FreePlan); err != nil {
			return nil, fmt.Errorf("sites: creating the built-in free plan: %w", err)
		}
	}
	return r, nil
}

// loadSnapshot reads every record of st into a new snapshot (Version 0),
// the four buckets at once.
func loadSnapshot(ctx context.Context, st Store) (*Snapshot, error) {
	var (
		plans   []*Plan
		orgs    []*Org
		sites   []*Site
		domains []*Domain
		g       errgroup.Group
	)
	g.Go(func() error { return load(ctx, st, bucketPlans, &plans) })
	g.Go(func() error { return load(ctx, st, bucketOrgs, &orgs) })
	g.Go(func() error { return load(ctx, st, bucketSites, &sites) })
	g.Go(func() error { return load(ctx, st, bucketDomains, &domains) })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return snapshotOf(byKey(plans, planName), byKey(orgs, orgID), byKey(sites, siteID), byKey(domains, domainName)), nil
}

// byKey returns recs sorted by key without repeats: of records with the
// same key (one stored under another key than its own), the last read
// stays. They come sorted (the store's order of their own keys), and then
// are returned as they are.
func byKey[T any](recs []*T, key func(*T) string) []*T {
	sorted := true
	for i := 1; i < len(recs) && sorted; i++ {
		sorted = key(recs[i-1]) < key(recs[i])
	}
	if sorted {
		return recs
	}
	slices.SortStableFunc(recs, func(a, b *T) int { return strings.Compare(key(a), key(b)) })
	last := recs[:0]
	for i, rec := range recs {
		if i+1 == len(recs) || key(recs[i+1]) != key(rec) {
			last = append(last, rec)
		}
	}
	return last
}

// Reload reads the whole registry from the store again and publishes it if
// it differs from the current snapshot. With a store shared by several
// nodes (Redis), it is how a node sees the others' writes. On error the
// current snapshot stays.
//
// A registry the store lost under this node (empty, or at a version below
// the one last loaded) is not published: the node keeps its snapshot,
// Lost reports the loss, writes are refused, and Reload returns an error
// wrapping ErrRegistryLost. The loss ends when the store holds the same
// records as the snapshot again (a restore from this or another node); a
// restarted node loads whatever the store holds.
func (r *Registry) Reload(ctx context.Context) (changed bool, err error) {
	// The version this node holds, then the store's, then the records: this
	// node's own writes meanwhile raise the store's version and Seen, never
	// make ver lower than seen (a loss); another node's only make ver low.
	seen := r.Seen()
	ver, err := r.storeVersion(ctx)
	if err != nil {
		return false, err
	}
	next, err := loadSnapshot(ctx, r.st)
	if err != nil {
		return false, err
	}
	r.evict(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.snap.Load()
	same := sameRecords(cur, next)
	if loss := r.lost.Load(); loss != nil {
		if !same {
			return false, loss.Err()
		}
		r.lost.Store(nil) // restored
	} else if reason := lossOf(cur, next, seen, ver, same); reason != "" {
		loss := &Loss{Reason: reason, Since: r.now(), Orgs: cur.Orgs.Len(), Sites: cur.Sites.Len(), Domains: cur.Domains.Len()}
		r.lost.Store(loss)
		return false, loss.Err()
	}
	// Writes after ver (this node's own among them, made while the records
	// were read) come again from the change log: they are idempotent.
	r.seen = ver
	if same {
		return false, nil
	}
	next.Version = cur.Version + 1
	r.publish(next, nil)
	return true, nil
}

// sameRecords reports whether two snapshots hold equal records.
func sameRecords(a, b *Snapshot) bool {
	return mapsEqual(a.Plans, b.Plans) && mapsEqual(a.Orgs, b.Orgs) && mapsEqual(a.Sites, b.Sites) && mapsEqual(a.Domains, b.Domains)
}

func mapsEqual[T any](a, b cowmap.Map[*T]) bool {
	if a.Len() != b.Len() {
		return false
	}
	for k, x := range a.All() {
		y := b.Get(k)
		if y == nil {
			return false
		}
		if x == y {
			continue
		}
		jx, _ := json.Marshal(x)
		jy, _ := json.Marshal(y)
		if string(jx) != string(jy) {
			return false
		}
	}
	return true
}

// load decodes every record of bucket, appending them to into in the
// store's order.
func load[T any](ctx context.Context, st Store, bucket string, into *[]*T) error {
	return st.Scan(ctx, bucket, func(k, v []byte) error {
		rec := new(T)
		if err := json.Unmarshal(v, rec); err != nil {
			return fmt.Errorf("sites: corrupt record %s/%s: %w", bucket, k, err)
		}
		*into = append(*into, rec)
		return nil
	})
}

// evict releases what reading every record left resident, when the store
// can (evicter). A failure leaves it resident, nothing worse.
func (r *Registry) evict(ctx context.Context) {
	if ev, ok := r.st.(evicter); ok {
		_ = ev.Evict(ctx)
	}
}

// Snapshot returns the current immutable view. It never blocks.
func (r *Registry) Snapshot() *Snapshot { return r.snap.Load() }

// OnChange registers fn to be called with every new snapshot, in order,
// with the records that changed since the one before (nil: any may have),
// and once right away with the current one and a nil Delta. fn must be
// fast, in the size of the Delta; it runs under the registry's write lock.
func (r *Registry) OnChange(fn func(*Snapshot, *Delta)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs = append(r.subs, fn)
	fn(r.snap.Load(), nil)
}

// publish makes next the current snapshot and tells the subscribers.
// r.mu is held.
func (r *Registry) publish(next *Snapshot, d *Delta) {
	r.snap.Store(next)
	for _, fn := range r.subs {
		fn(next, d)
	}
}

// update runs fn on a write (tx) derived from the current snapshot under
// the write lock, persists the ops it returns and publishes the result. The
// write costs what it touches, not the registry's size. While the store has
// lost the registry (Lost), it refuses: one record written into a wiped
// store would become the whole registry for every node that starts next.
func (r *Registry) update(ctx context.Context, fn func(t *tx) ([]Change, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if loss := r.lost.Load(); loss != nil {
		return loss.Err()
	}
	t := newTx(r.snap.Load())
	ops, err := fn(t)
	if err != nil {
		return err
	}
	if err := r.persist(ctx, ops); err != nil {
		return fmt.Errorf("sites: persisting: %w", err)
	}
	r.publish(t.snapshot(), &t.delta)
	return nil
}

func putOp(bucket, key string, v any) Change {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // records are plain structs: Marshal cannot fail
	}
	return Change{Bucket: bucket, Key: key, Value: b}
}

func deleteOp(bucket, key string) Change { return Change{Bucket: bucket, Key: key} }

func invalid(err error) error { return fmt.Errorf("%w: %w", ErrInvalid, err) }
