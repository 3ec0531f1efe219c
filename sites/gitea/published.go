package gitea

// What a repository published, kept in the node's store while the gate
// refuses a newer head, so that a restart serves the same commit and asks
// the gate about the head instead of publishing it as a first publish.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tollgate-edge/tollgate/store"
)

// Store is where a Source keeps its repositories' records
// (Options.Store): the node's own store, read at a repository's first
// look-up and written only when a refusal starts or ends. *store.Bolt
// implements it.
type Store interface {
	// Get returns the value of key in bucket, nil when either is missing.
	Get(ctx context.Context, bucket, key string) ([]byte, error)
	// Apply writes ops in one transaction: all or none.
	Apply(ctx context.Context, ops ...store.Op) error
}

// bucketPublished holds a publishedRecord per repository branch, under
// "owner/repo@branch" (the branch asked for: "" for the pages rule).
const bucketPublished = "gitea_published"

// publishedRecord is what a repository serves while the gate refuses a newer
// head. It exists only while that refusal stands: written at the first
// refusal after a publish, deleted when the repository publishes a commit
// (a head the gate allows, its head back at the served commit, or its
// branch back after a deletion). So the records are at most the
// repositories with a standing refusal; a repository without one serves
// its head, which a first publish gives it again after a restart. A record
// belongs to the repository, not to a registry site: deleting a site leaves
// it (the repository may still be served by the pages rule); it goes with
// the repository's next publish.
type publishedRecord struct {
	Commit  string    `json:"commit"`  // the commit served
	Branch  string    `json:"branch"`  // the branch it was read from
	Refused string    `json:"refused"` // the first head refused since it was published
	At      time.Time `json:"at"`      // when that head was refused
}

func (r *Repo) recordKey() string { return r.owner + "/" + r.repo + "@" + r.branch }

// loadRecord reads the repository's record once, at its first look-up that
// Gitea answered; a repository with one has a refusal standing. r.lookup is
// held. A failed read is tried again at the next look-up.
func (r *Repo) loadRecord() {
	if r.loaded || r.g.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
	defer cancel()
	v, err := r.g.store.Get(ctx, bucketPublished, r.recordKey())
	if err != nil {
		r.g.log(fmt.Errorf("reading the published commit: %w", err), r.Name())
		return
	}
	r.loaded = true
	if v == nil {
		return
	}
	var rec publishedRecord
	if err := json.Unmarshal(v, &rec); err != nil || rec.Commit == "" {
		r.g.log(fmt.Errorf("record of the published commit unreadable (%v): ignored", err), r.Name())
		return
	}
	r.record, r.refused = &rec, true
}

// restore serves the commit the repository's record names, as published
// before a restart, and returns its state. Its checked time is zero: when
// the head cannot be decided now, the next request checks it again.
func (r *Repo) restore() *repoState {
	st := &repoState{commit: r.record.Commit, branch: r.record.Branch, space: r.g.cache.NewSpace(), extra: &commitExtra{}}
	r.state.Store(st)
	return st
}

// saveRecord records that served stays published while refused is not:
// written when the record is missing or names another commit (one write per
// refusal, not per recheck). A failed write is logged and tried again at the
// next refusal.
func (r *Repo) saveRecord(served *repoState, refused string) {
	if r.g.store == nil || r.record != nil && r.record.Commit == served.commit {
		return
	}
	rec := publishedRecord{Commit: served.commit, Branch: served.branch, Refused: refused, At: r.g.now().UTC()}
	v, err := json.Marshal(rec)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
		defer cancel()
		err = r.g.store.Apply(ctx, store.Put(bucketPublished, r.recordKey(), v))
	}
	if err != nil {
		r.g.log(fmt.Errorf("published commit %s not recorded: a restart may publish %s: %w", served.commit, refused, err), r.Name())
		return
	}
	r.record = &rec
}

// dropRecord deletes the repository's record: it published a commit. A
// failed delete is logged and tried again at the next publish.
func (r *Repo) dropRecord() {
	if r.record == nil || r.g.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
	defer cancel()
	if err := r.g.store.Apply(ctx, store.Delete(bucketPublished, r.recordKey())); err != nil {
		r.g.log(fmt.Errorf("record of the published commit %s not deleted: %w", r.record.Commit, err), r.Name())
		return
	}
	r.record = nil
}
