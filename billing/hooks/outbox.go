package hooks

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The outbox: bucket hook_outbox holds a sub-bucket per hook URL (named by
// a hash of the URL), with two sub-buckets:
//
//	queue: 8-byte big-endian sequence → hookDelivery JSON (oldest first)
//	ids:   event id → 'p' + sequence (pending) or 'd' + unix nanos (done:
//	       delivered or dropped; pruned after MaxAge)
const bucketHookOutbox = "hook_outbox"

var (
	hookQueue = []byte("queue")
	hookIDs   = []byte("ids")
)

// hookDelivery is an outbox record.
type hookDelivery struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Org       string          `json:"org"`
	Body      json.RawMessage `json:"body"` // the POST body, identical on every attempt
	Queued    time.Time       `json:"queued"`
	Attempts  int             `json:"attempts,omitempty"`
	Next      time.Time       `json:"next,omitzero"` // next attempt due (zero: now)
	LastError string          `json:"last_error,omitempty"`
}

// open creates the buckets of every hook, counts what is pending and warns
// about deliveries left for URLs no longer configured.
func (h *Hooks) open(ctx context.Context) error {
	mine := map[string]bool{}
	err := h.st.Update(ctx, func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists([]byte(bucketHookOutbox))
		if err != nil {
			return err
		}
		for _, w := range h.workers {
			mine[string(w.key)] = true
			hb, err := root.CreateBucketIfNotExists(w.key)
			if err != nil {
				return err
			}
			q, err := hb.CreateBucketIfNotExists(hookQueue)
			if err != nil {
				return err
			}
			if _, err := hb.CreateBucketIfNotExists(hookIDs); err != nil {
				return err
			}
			w.pending.Store(int64(q.Stats().KeyN))
		}
		return root.ForEachBucket(func(k []byte) error {
			if q := root.Bucket(k).Bucket(hookQueue); !mine[string(k)] && q != nil {
				if n := q.Stats().KeyN; n > 0 {
					h.log.Warn("hook deliveries pending for a URL no longer configured; kept until it is again",
						slog.String("outbox", string(k)), slog.Int("pending", n))
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("hooks: outbox: %w", err)
	}
	return nil
}

// queue appends rec, the outbox record of event id, to the queue of each of
// ws whose ids do not hold id yet, in one transaction. added[i] reports
// whether ws[i] got it.
func (h *Hooks) queue(ctx context.Context, ws []*hookWorker, id string, rec []byte) (added []bool, err error) {
	added = make([]bool, len(ws))
	err = h.st.Update(ctx, func(tx *bolt.Tx) error {
		for i, w := range ws {
			q, ids, err := hookBuckets(tx, w)
			if err != nil {
				return err
			}
			if ids.Get([]byte(id)) != nil {
				added[i] = false
				continue
			}
			seq, err := q.NextSequence()
			if err != nil {
				return err
			}
			if err := q.Put(seqKey(seq), rec); err != nil {
				return err
			}
			if err := ids.Put([]byte(id), idMark('p', seq)); err != nil {
				return err
			}
			added[i] = true
		}
		return nil
	})
	return added, err
}

// head returns the oldest queued delivery of w: seq 0 when the queue is
// empty, d nil when its record does not decode.
func (h *Hooks) head(ctx context.Context, w *hookWorker) (uint64, *hookDelivery, error) {
	var seq uint64
	var d *hookDelivery
	err := h.st.View(ctx, func(tx *bolt.Tx) error {
		q, _, err := hookBuckets(tx, w)
		if err != nil {
			return err
		}
		k, v := q.Cursor().First()
		if k == nil {
			return nil
		}
		seq = binary.BigEndian.Uint64(k)
		var rec hookDelivery
		if json.Unmarshal(v, &rec) == nil {
			d = &rec
		}
		return nil
	})
	return seq, d, err
}

// reschedule writes d, changed after a failed attempt, back over its record.
func (h *Hooks) reschedule(ctx context.Context, w *hookWorker, seq uint64, d *hookDelivery) error {
	rec, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return h.st.Update(ctx, func(tx *bolt.Tx) error {
		q, _, err := hookBuckets(tx, w)
		if err != nil {
			return err
		}
		return q.Put(seqKey(seq), rec)
	})
}

// finish removes a delivered record and marks its id done.
func (h *Hooks) finish(ctx context.Context, w *hookWorker, seq uint64, id string) error {
	err := h.st.Update(ctx, func(tx *bolt.Tx) error {
		q, ids, err := hookBuckets(tx, w)
		if err != nil {
			return err
		}
		if err := q.Delete(seqKey(seq)); err != nil {
			return err
		}
		if id == "" {
			return nil
		}
		return ids.Put([]byte(id), idMark('d', uint64(h.now().UnixNano())))
	})
	if err == nil {
		w.pending.Add(-1)
	}
	return err
}

// prune forgets ids done more than MaxAge ago.
func (h *Hooks) prune(ctx context.Context, w *hookWorker, now time.Time) error {
	cutoff := uint64(now.Add(-h.maxAge).UnixNano())
	return h.st.Update(ctx, func(tx *bolt.Tx) error {
		_, ids, err := hookBuckets(tx, w)
		if err != nil {
			return err
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

func hookBuckets(tx *bolt.Tx, w *hookWorker) (queue, ids *bolt.Bucket, err error) {
	if root := tx.Bucket([]byte(bucketHookOutbox)); root != nil {
		if hb := root.Bucket(w.key); hb != nil {
			queue, ids = hb.Bucket(hookQueue), hb.Bucket(hookIDs)
		}
	}
	if queue == nil || ids == nil {
		return nil, nil, fmt.Errorf("bucket %s/%s missing", bucketHookOutbox, w.key)
	}
	return queue, ids, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func idMark(kind byte, n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{kind}, n) }
