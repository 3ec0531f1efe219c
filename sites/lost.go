package sites

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrRegistryLost: the shared store lost the registry under a running node
// (Redis restarted without persistence, a failover to a replica that missed
// writes, keys deleted by hand). The node keeps serving its last good
// snapshot and refuses registry writes until the store holds that snapshot's
// records again (`tollgate store restore`) or the node is restarted.
var ErrRegistryLost = errors.New("registry lost from the store")

// versioned is a store that counts its writes. A count that goes backwards
// means the store lost writes. *store.RedisKV implements it; the bbolt file
// does not need to (it cannot lose a write under the process that made it).
type versioned interface {
	Version(ctx context.Context) (int64, error)
}

// Loss describes a registry the store lost under this node.
type Loss struct {
	// Reason says what was seen: an empty registry, or a version below the
	// last one this node loaded.
	Reason string
	// Since is when this node noticed.
	Since time.Time
	// Orgs, Sites and Domains count the snapshot the node keeps serving.
	Orgs, Sites, Domains int
}

// Err is the error writes get while the registry is lost; it wraps
// ErrRegistryLost.
func (l *Loss) Err() error {
	return fmt.Errorf("%w: %s (since %s); this node serves its last snapshot (%d orgs, %d sites, %d domains) and refuses changes until the store holds it again: run `tollgate store restore`",
		ErrRegistryLost, l.Reason, l.Since.UTC().Format(time.RFC3339), l.Orgs, l.Sites, l.Domains)
}

// Lost returns what the store lost, or nil while the store holds the
// registry this node serves. It never blocks.
func (r *Registry) Lost() *Loss { return r.lost.Load() }

// storeVersion returns the store's write count, or -1 when the store does
// not count its writes.
func (r *Registry) storeVersion(ctx context.Context) (int64, error) {
	vs, ok := r.st.(versioned)
	if !ok {
		return -1, nil
	}
	v, err := vs.Version(ctx)
	if err != nil {
		return 0, fmt.Errorf("sites: reading the store's version: %w", err)
	}
	return v, nil
}

// lossOf returns why next, read from the store at version ver, is not a
// successor of cur, the snapshot this node serves, loaded at version seen;
// "" when it is. A registry always holds at least one plan (New creates
// "free"), so one without plans was wiped; a version below seen means
// writes this node saw are gone. Records equal to cur are never a loss,
// whatever the version says.
func lossOf(cur, next *Snapshot, seen, ver int64, same bool) string {
	switch {
	case same:
		return ""
	case next.Plans.Len() == 0 && cur.Plans.Len() > 0:
		return fmt.Sprintf("the registry in the store is empty (version %d, this node loaded version %d)", ver, seen)
	case ver >= 0 && ver < seen:
		return fmt.Sprintf("the store's registry version went back from %d to %d", seen, ver)
	}
	return ""
}
