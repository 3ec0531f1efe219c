package sites

import (
	"context"
	"encoding/json"
	"fmt"
)

// Following a shared store's change log: with Redis, every write appends
// its changes to a log (store.RedisKV, rediskv_log.go) under the version it
// produced, and the other nodes apply them in order, so a write costs each
// node what it changed, not a reload of the registry.

// Logged is one write as a store's change log holds it. It is an alias of
// an unnamed struct type, as store.LogEntry is: the two name one type.
type Logged = struct {
	// Version is the store version the write produced.
	Version int64
	// Ops are its changes; nil with Reset.
	Ops []Change
	// Reset: the write was too large to log; load the whole registry.
	Reset bool
}

// versionedApplier is a store whose writes report the version they
// produced (*store.RedisKV): a node's own write then advances the version
// it holds, and it skips that write when it reads it back from the log.
type versionedApplier interface {
	ApplyVersion(ctx context.Context, ops ...Change) (int64, error)
}

// persist writes ops to the store. r.mu is held.
func (r *Registry) persist(ctx context.Context, ops []Change) error {
	va, ok := r.st.(versionedApplier)
	if !ok {
		return r.st.Apply(ctx, ops...)
	}
	v, err := va.ApplyVersion(ctx, ops...)
	if err == nil && v == r.seen+1 {
		r.seen = v // else another node wrote in between: read it from the log
	}
	return err
}

// Seen is the store version the registry holds: the last write it loaded,
// made or followed (-1 for a store without versions).
func (r *Registry) Seen() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

// Follow applies writes read from the store's change log, in version order,
// and publishes them as one new snapshot with their Delta. Writes at or
// below Seen are skipped (this node's own among them). It returns false
// when the log cannot bring the registry up to date and the caller must
// Reload: an entry that is not the next version (the log was trimmed past
// this node, or written around), a reset entry, a corrupt record, or a
// registry the store lost (Lost). What it applied before that stays.
func (r *Registry) Follow(entries []Logged) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost.Load() != nil {
		return false
	}
	t := newTx(r.snap.Load())
	ok := true
	for _, e := range entries {
		if e.Version <= r.seen {
			continue
		}
		if e.Version != r.seen+1 || e.Reset || t.applyLogged(e.Ops) != nil {
			ok = false
			break
		}
		r.seen = e.Version
	}
	if d := t.delta; len(d.Plans)+len(d.Orgs)+len(d.Sites)+len(d.Domains) > 0 {
		r.publish(t.snapshot(), &t.delta)
	}
	return ok
}

// applyLogged applies one logged write's changes to t. Changes of buckets
// other than the registry's (billing's events) are not the registry's to
// apply. On error t may hold part of the write: the caller reloads.
func (t *tx) applyLogged(ops []Change) error {
	for _, c := range ops {
		if err := t.applyChange(c); err != nil {
			return fmt.Errorf("sites: corrupt logged record %s/%s: %w", c.Bucket, c.Key, err)
		}
	}
	return nil
}

func (t *tx) applyChange(c Change) error {
	switch c.Bucket {
	case bucketPlans:
		return applyRecord(c, t.putPlan, t.deletePlan)
	case bucketOrgs:
		return applyRecord(c, t.putOrg, t.deleteOrg)
	case bucketSites:
		return applyRecord(c, t.putSite, t.deleteSite)
	case bucketDomains:
		return applyRecord(c, t.putDomain, t.deleteDomain)
	}
	return nil
}

// applyRecord puts the record c holds, or deletes c.Key when it holds none.
func applyRecord[T any](c Change, put func(*T), del func(string)) error {
	if c.Value == nil {
		del(c.Key)
		return nil
	}
	v := new(T)
	if err := json.Unmarshal(c.Value, v); err != nil {
		return err
	}
	put(v)
	return nil
}
