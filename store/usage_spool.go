package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/outbox"
	bolt "go.etcd.io/bbolt"
)

// The meter's spool is one queue of an outbox in the bbolt file. The box
// is not named after the older flat bucket meter_spool: a box is a bucket
// of queue buckets, that one holds batches.
const (
	spoolBox   = "meter_spool_outbox"
	spoolQueue = "batches"
)

// spoolNames are the spool outbox's metrics, beside the meter's own
// (tollgate_meter_spooled_batches_total counts the batches put in).
var spoolNames = outbox.Names{
	Results: "tollgate_meter_spool_drained_batches_total",
	ResultsHelp: "Usage batches taken out of the local bbolt spool, by result: applied (the store took it), dropped (not readable). " +
		"retry stays 0: the meter sends the spool again, oldest first, at every flush.",
	Delivered:   "applied",
	Pending:     "tollgate_meter_spool_batches",
	PendingHelp: "Usage batches waiting in the local bbolt spool for the store (Redis).",
}

// spooledBatch is a spool record: a batch and its outbox state, queued once
// per (node, seq).
type spooledBatch struct {
	outbox.Item
	meter.Batch
}

func spoolID(b *meter.Batch) string { return b.Node + "/" + strconv.FormatUint(b.Seq, 10) }

// UsageSpool keeps the batches the meter's sink (Redis) could not take in
// the bbolt file, in an outbox (box meter_spool_outbox, queue batches), until
// the sink takes them. It is safe for concurrent use.
type UsageSpool struct {
	ob *outbox.Outbox[spooledBatch, *spooledBatch]
}

var _ meter.Spool = (*UsageSpool)(nil)

// UsageSpoolOptions are a UsageSpool's collaborators.
type UsageSpoolOptions struct {
	Metrics prometheus.Registerer // required
	Logger  *slog.Logger          // default slog.Default()
}

// NewUsageSpool opens the spool in st. Batches an older tollgate left in
// the flat bucket meter_spool are moved into it first, in one transaction.
func NewUsageSpool(ctx context.Context, st *Bolt, opts UsageSpoolOptions) (*UsageSpool, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	moved, err := st.adoptOldSpool(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: moving the old usage spool: %w", err)
	}
	ob, err := outbox.New[spooledBatch](outbox.Config{Store: st, Box: spoolBox, Queues: []string{spoolQueue},
		Metrics: opts.Metrics, Names: spoolNames, Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("store: usage spool: %w", err)
	}
	if moved > 0 {
		opts.Logger.Info("store: spooled usage batches moved into the spool outbox", slog.Int("batches", moved))
	}
	return &UsageSpool{ob: ob}, nil
}

// adoptOldSpool moves the batches of the flat bucket meter_spool (Seq →
// batch JSON) to the end of the spool's queue, in Seq order, and deletes
// the bucket, in one transaction: after a crash either all moved or none.
// A batch the queue already holds (same node and seq) is not queued twice;
// one that does not decode is moved as it is, for the outbox to drop and
// count. Without the bucket it only reads, so a node starts on a full disk.
func (b *Bolt) adoptOldSpool(ctx context.Context) (moved int, err error) {
	var found bool
	err = b.View(ctx, func(tx *bolt.Tx) error {
		found = tx.Bucket([]byte(bktSpool)) != nil
		return nil
	})
	if err != nil || !found {
		return 0, err
	}
	now := time.Now()
	err = b.Update(ctx, func(tx *bolt.Tx) error {
		moved = 0
		old := tx.Bucket([]byte(bktSpool))
		if old == nil {
			return nil
		}
		err := old.ForEach(func(_, v []byte) error {
			a := outbox.Add{Queue: spoolQueue, Record: v}
			rec := &spooledBatch{}
			if json.Unmarshal(v, &rec.Batch) == nil {
				rec.ID, rec.Queued = spoolID(&rec.Batch), now
				body, err := json.Marshal(rec)
				if err != nil {
					return err
				}
				a.ID, a.Record = rec.ID, body
			}
			added, err := outboxAppend(tx, spoolBox, a)
			if added {
				moved++
			}
			return err
		})
		if err != nil {
			return err
		}
		return tx.DeleteBucket([]byte(bktSpool))
	})
	return moved, err
}

// Save queues batches at the end of the spool, in one transaction. A batch
// the spool holds already (same node and seq) is kept as it was.
func (s *UsageSpool) Save(ctx context.Context, bs []*meter.Batch) error {
	recs := make([]*spooledBatch, len(bs))
	for i, b := range bs {
		recs[i] = &spooledBatch{Item: outbox.Item{ID: spoolID(b)}, Batch: *b}
	}
	_, err := s.ob.Add(ctx, []string{spoolQueue}, recs...)
	return err
}

// Load returns the spooled batches in Seq order. Records that do not decode
// are dropped (logged and counted by the outbox).
func (s *UsageSpool) Load(ctx context.Context) ([]*meter.Batch, error) {
	// Nothing sets a record's next attempt: every record is due.
	recs, err := s.ob.Due(ctx, spoolQueue, time.Now())
	if err != nil {
		return nil, err
	}
	out := make([]*meter.Batch, len(recs))
	for i, r := range recs {
		out[i] = &r.Batch
	}
	slices.SortStableFunc(out, func(a, b *meter.Batch) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// Remove deletes spooled batch seq once the sink took it. The meter removes
// the oldest first, so it is usually the head of the queue; otherwise the
// queue is searched.
func (s *UsageSpool) Remove(ctx context.Context, seq uint64) error {
	head, err := s.ob.Head(ctx, spoolQueue)
	if err != nil || head == nil {
		return err
	}
	if head.Batch.Seq == seq {
		return s.ob.Done(ctx, head)
	}
	recs, err := s.ob.Due(ctx, spoolQueue, time.Now())
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Batch.Seq == seq {
			return s.ob.Done(ctx, r)
		}
	}
	return nil
}

// Pending reports how many batches wait in the spool.
func (s *UsageSpool) Pending() int { return s.ob.Pending() }
