package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/tollgate-edge/tollgate/outbox"
	bolt "go.etcd.io/bbolt"
)

// The outboxes' queues in the bbolt file (outbox.Store): a bucket per box
// (hook_outbox, stripe_meter_outbox, meter_spool_outbox) holds a bucket per queue, which holds
//
//	queue: 8-byte big-endian sequence → record (oldest first)
//	ids:   id → 'p' + sequence (pending) or 'd' + unix nanos (done, until
//	       forgotten)
//
// They stay in each node's own file, also in a cluster: an outbox is the
// node's promise to deliver what it queued.
var (
	outboxRecords = []byte("queue")
	outboxIDs     = []byte("ids")
)

var _ outbox.Store = (*Bolt)(nil)

// Append adds each record to the end of its queue, in one transaction,
// except one whose queue remembers its ID.
func (b *Bolt) Append(ctx context.Context, box string, adds []outbox.Add) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	added := make([]bool, len(adds))
	err := b.db.Update(func(tx *bolt.Tx) error {
		for i, a := range adds {
			ok, err := outboxAppend(tx, box, a)
			if err != nil {
				return err
			}
			added[i] = ok
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: outbox %s: %w", box, err)
	}
	return added, nil
}

// outboxAppend adds a to the end of its queue in tx unless the queue
// remembers its ID.
func outboxAppend(tx *bolt.Tx, box string, a outbox.Add) (bool, error) {
	q, ids, err := outboxCreate(tx, box, a.Queue)
	if err != nil {
		return false, err
	}
	if a.ID != "" && ids.Get([]byte(a.ID)) != nil {
		return false, nil
	}
	seq, err := q.NextSequence()
	if err != nil {
		return false, err
	}
	if err := q.Put(outboxSeqKey(seq), a.Record); err != nil {
		return false, err
	}
	if a.ID != "" {
		if err := ids.Put([]byte(a.ID), outboxMark('p', seq)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// Queued calls fn with each pending record of queue, oldest first, until
// fn returns false.
func (b *Bolt) Queued(ctx context.Context, box, queue string, fn func(seq uint64, record []byte) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(func(tx *bolt.Tx) error {
		q, _ := outboxBuckets(tx, box, queue)
		if q == nil {
			return nil
		}
		c := q.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if !fn(binary.BigEndian.Uint64(k), v) {
				break
			}
		}
		return nil
	})
}

// Rewrite replaces pending record seq of queue.
func (b *Bolt) Rewrite(ctx context.Context, box, queue string, seq uint64, record []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		q, _ := outboxBuckets(tx, box, queue)
		if q == nil || q.Get(outboxSeqKey(seq)) == nil {
			return nil
		}
		return q.Put(outboxSeqKey(seq), record)
	})
}

// Ack removes record seq from queue and marks id done at at (zero: forgets
// it).
func (b *Bolt) Ack(ctx context.Context, box, queue string, seq uint64, id string, at time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	removed := false
	err := b.db.Update(func(tx *bolt.Tx) error {
		q, ids := outboxBuckets(tx, box, queue)
		if q == nil {
			return nil
		}
		removed = q.Get(outboxSeqKey(seq)) != nil
		if err := q.Delete(outboxSeqKey(seq)); err != nil {
			return err
		}
		switch {
		case id == "":
			return nil
		case at.IsZero():
			return ids.Delete([]byte(id))
		default:
			return ids.Put([]byte(id), outboxMark('d', uint64(at.UnixNano())))
		}
	})
	return removed, err
}

// Forget deletes the marks of ids of queue done before t.
func (b *Bolt) Forget(ctx context.Context, box, queue string, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cutoff := uint64(t.UnixNano())
	return b.db.Update(func(tx *bolt.Tx) error {
		_, ids := outboxBuckets(tx, box, queue)
		if ids == nil {
			return nil
		}
		var old [][]byte
		c := ids.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 9 && v[0] == 'd' && binary.BigEndian.Uint64(v[1:]) < cutoff {
				old = append(old, bytes.Clone(k))
			}
		}
		for _, k := range old {
			if err := ids.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Queues returns every queue of box with its number of pending records.
func (b *Bolt) Queues(ctx context.Context, box string) (map[string]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[string]int{}
	err := b.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket([]byte(box))
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(k []byte) error {
			if q := root.Bucket(k).Bucket(outboxRecords); q != nil {
				out[string(k)] = q.Stats().KeyN
			}
			return nil
		})
	})
	return out, err
}

// outboxBuckets returns the buckets of a queue, nil when it does not exist.
func outboxBuckets(tx *bolt.Tx, box, queue string) (records, ids *bolt.Bucket) {
	root := tx.Bucket([]byte(box))
	if root == nil {
		return nil, nil
	}
	qb := root.Bucket([]byte(queue))
	if qb == nil {
		return nil, nil
	}
	records, ids = qb.Bucket(outboxRecords), qb.Bucket(outboxIDs)
	if records == nil || ids == nil {
		return nil, nil
	}
	return records, ids
}

// outboxCreate returns the buckets of a queue, creating them if needed.
func outboxCreate(tx *bolt.Tx, box, queue string) (records, ids *bolt.Bucket, err error) {
	root, err := tx.CreateBucketIfNotExists([]byte(box))
	if err != nil {
		return nil, nil, err
	}
	qb, err := root.CreateBucketIfNotExists([]byte(queue))
	if err != nil {
		return nil, nil, err
	}
	if records, err = qb.CreateBucketIfNotExists(outboxRecords); err != nil {
		return nil, nil, err
	}
	ids, err = qb.CreateBucketIfNotExists(outboxIDs)
	return records, ids, err
}

func outboxSeqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func outboxMark(kind byte, n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{kind}, n) }
