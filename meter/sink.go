package meter

import (
	"context"
	"fmt"
)

// Sink stores flushed batches. Apply must be idempotent per (Node, Seq, Org):
// a batch is applied for an org only if its Seq is above the last applied
// for (Node, Org). A batch applied for some orgs only fails with a
// *NotAppliedError. *store.BoltUsage and *store.RedisUsage implement it.
type Sink interface {
	Apply(ctx context.Context, b *Batch) error
}

// NotAppliedError is what a Sink returns for a batch it applied for some
// orgs only (in Redis Cluster, a shard without a master). Retry lists the
// orgs the batch must be sent again for; Blocked, a subset, those whose
// deltas may be missing, so their later batches must wait (one org's
// batches are applied in Seq order). Every other org may take later batches.
type NotAppliedError struct {
	Retry, Blocked []string
	Err            error
}

func (e *NotAppliedError) Error() string {
	return fmt.Sprintf("not applied for %d orgs: %v", len(e.Retry), e.Err)
}

func (e *NotAppliedError) Unwrap() error { return e.Err }

// Spool keeps batches the sink could not take, durably, in Seq order.
// *store.UsageSpool implements it (an outbox in the bbolt file).
type Spool interface {
	Save(ctx context.Context, bs []*Batch) error
	Load(ctx context.Context) ([]*Batch, error)
	Remove(ctx context.Context, seq uint64) error
}

// Journal holds every batch the sink has not taken yet, in disk space
// reserved ahead, so keeping usage needs no new space on a full disk.
// *SpoolFile implements it.
type Journal interface {
	// Save replaces what the journal holds with bs (nil: nothing waits),
	// durably.
	Save(bs []*Batch) error
	// Load returns what the last Save stored.
	Load() ([]*Batch, error)
}
