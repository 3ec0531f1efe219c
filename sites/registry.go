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
	"sync"
	"sync/atomic"
	"time"
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
	subs []func(*Snapshot)
	// seen is the store's version (see versioned) at the last load, -1 for
	// a store without one. Guarded by mu.
	seen int64
	// lost is set while the store does not hold the registry this node
	// serves (see Reload); nil otherwise.
	lost atomic.Pointer[Loss]
}

// New loads the registry from st. On an empty store it creates the built-in
// "free" plan (FreePlan).
func New(ctx context.Context, st Store) (*Registry, error) {
	r := &Registry{st: st, now: time.Now}
	snap := &Snapshot{Plans: map[string]*Plan{}, Orgs: map[string]*Org{}, Sites: map[string]*Site{}, Domains: map[string]*Domain{}}
	var err error
	if r.seen, err = r.storeVersion(ctx); err != nil {
		return nil, err
	}
	if err := loadAll(ctx, st, snap); err != nil {
		return nil, err
	}
	snap.index()
	r.snap.Store(snap)
	if len(snap.Plans) == 0 {
		if _, err := r.PutPlan(ctx, FreePlan); err != nil {
			return nil, fmt.Errorf("sites: creating the built-in free plan: %w", err)
		}
	}
	return r, nil
}

// loadAll reads every record into snap.
func loadAll(ctx context.Context, st Store, snap *Snapshot) error {
	if err := load(ctx, st, bucketPlans, snap.Plans, func(p *Plan) string { return p.Name }); err != nil {
		return err
	}
	if err := load(ctx, st, bucketOrgs, snap.Orgs, func(o *Org) string { return o.ID }); err != nil {
		return err
	}
	if err := load(ctx, st, bucketSites, snap.Sites, func(s *Site) string { return s.ID }); err != nil {
		return err
	}
	return load(ctx, st, bucketDomains, snap.Domains, func(d *Domain) string { return d.Name })
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
	ver, err := r.storeVersion(ctx) // before the records: a write in between only makes ver low
	if err != nil {
		return false, err
	}
	next := &Snapshot{Plans: map[string]*Plan{}, Orgs: map[string]*Org{}, Sites: map[string]*Site{}, Domains: map[string]*Domain{}}
	if err := loadAll(ctx, r.st, next); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.snap.Load()
	same := sameRecords(cur, next)
	if loss := r.lost.Load(); loss != nil {
		if !same {
			return false, loss.Err()
		}
		r.lost.Store(nil) // restored
	} else if reason := lossOf(cur, next, r.seen, ver, same); reason != "" {
		loss := &Loss{Reason: reason, Since: r.now(), Orgs: len(cur.Orgs), Sites: len(cur.Sites), Domains: len(cur.Domains)}
		r.lost.Store(loss)
		return false, loss.Err()
	}
	r.seen = ver
	if same {
		return false, nil
	}
	next.Version = cur.Version + 1
	next.index()
	r.snap.Store(next)
	for _, fn := range r.subs {
		fn(next)
	}
	return true, nil
}

// sameRecords reports whether two snapshots hold equal records.
func sameRecords(a, b *Snapshot) bool {
	return mapsEqual(a.Plans, b.Plans) && mapsEqual(a.Orgs, b.Orgs) && mapsEqual(a.Sites, b.Sites) && mapsEqual(a.Domains, b.Domains)
}

func mapsEqual[T any](a, b map[string]*T) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok {
			return false
		}
		jx, _ := json.Marshal(x)
		jy, _ := json.Marshal(y)
		if string(jx) != string(jy) {
			return false
		}
	}
	return true
}

func load[T any](ctx context.Context, st Store, bucket string, into map[string]*T, key func(*T) string) error {
	return st.Scan(ctx, bucket, func(k, v []byte) error {
		rec := new(T)
		if err := json.Unmarshal(v, rec); err != nil {
			return fmt.Errorf("sites: corrupt record %s/%s: %w", bucket, k, err)
		}
		into[key(rec)] = rec
		return nil
	})
}

// Snapshot returns the current immutable view. It never blocks.
func (r *Registry) Snapshot() *Snapshot { return r.snap.Load() }

// OnChange registers fn to be called with every new snapshot, in order, and
// once right away with the current one. fn must be fast; it runs under the
// registry's write lock.
func (r *Registry) OnChange(fn func(*Snapshot)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs = append(r.subs, fn)
	fn(r.snap.Load())
}

// update runs fn on a copy of the snapshot under the write lock, persists the
// ops it returns and publishes the copy. While the store has lost the
// registry (Lost), it refuses: one record written into a wiped store would
// become the whole registry for every node that starts next.
func (r *Registry) update(ctx context.Context, fn func(next *Snapshot) ([]Change, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if loss := r.lost.Load(); loss != nil {
		return loss.Err()
	}
	next := r.snap.Load().clone()
	ops, err := fn(next)
	if err != nil {
		return err
	}
	if err := r.st.Apply(ctx, ops...); err != nil {
		return fmt.Errorf("sites: persisting: %w", err)
	}
	next.index()
	r.snap.Store(next)
	for _, fn := range r.subs {
		fn(next)
	}
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
