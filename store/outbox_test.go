package store

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/outbox"
	bolt "go.etcd.io/bbolt"
)

// TestOutboxLayout: the outbox keeps the layout the hooks' outbox had
// before the outbox package (box/queue/{queue,ids}), so a file written by
// an older tollgate is read as it was: its pending records in order, its
// pending and done ids.
func TestOutboxLayout(t *testing.T) {
	ctx := context.Background()
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "t.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	done := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	// As the older hooks wrote it.
	err = b.Update(ctx, func(tx *bolt.Tx) error {
		root, _ := tx.CreateBucketIfNotExists([]byte("hook_outbox"))
		hb, _ := root.CreateBucketIfNotExists([]byte("0123abcd"))
		q, _ := hb.CreateBucketIfNotExists([]byte("queue"))
		ids, _ := hb.CreateBucketIfNotExists([]byte("ids"))
		for _, id := range []string{"evt_1", "evt_2"} {
			seq, _ := q.NextSequence()
			_ = q.Put(binary.BigEndian.AppendUint64(nil, seq), []byte(`{"id":"`+id+`"}`))
			_ = ids.Put([]byte(id), binary.BigEndian.AppendUint64([]byte{'p'}, seq))
		}
		return ids.Put([]byte("evt_0"), binary.BigEndian.AppendUint64([]byte{'d'}, uint64(done.UnixNano())))
	})
	if err != nil {
		t.Fatal(err)
	}

	if n, err := b.Queues(ctx, "hook_outbox"); err != nil || len(n) != 1 || n["0123abcd"] != 2 {
		t.Fatalf("queues %v, %v", n, err)
	}
	var seqs []uint64
	var recs []string
	err = b.Queued(ctx, "hook_outbox", "0123abcd", func(seq uint64, rec []byte) bool {
		seqs, recs = append(seqs, seq), append(recs, string(rec))
		return true
	})
	if err != nil || len(recs) != 2 || recs[0] != `{"id":"evt_1"}` || seqs[0] != 1 || seqs[1] != 2 {
		t.Fatalf("queued %v %v, %v", seqs, recs, err)
	}
	added, err := b.Append(ctx, "hook_outbox", []outbox.Add{
		{Queue: "0123abcd", ID: "evt_0"}, {Queue: "0123abcd", ID: "evt_2"}, {Queue: "0123abcd", ID: "evt_3", Record: []byte("{}")}})
	if err != nil || added[0] || added[1] || !added[2] {
		t.Fatalf("append of a done, a pending and a new id: %v, %v", added, err)
	}

	// Ack remembers or forgets; Forget drops what was done before t;
	// Rewrite leaves a removed record removed.
	if removed, err := b.Ack(ctx, "hook_outbox", "0123abcd", 1, "evt_1", done.Add(time.Hour)); err != nil || !removed {
		t.Fatalf("ack: %v, %v", removed, err)
	}
	if removed, err := b.Ack(ctx, "hook_outbox", "0123abcd", 1, "", time.Time{}); err != nil || removed {
		t.Fatalf("second ack: %v, %v", removed, err)
	}
	if err := b.Rewrite(ctx, "hook_outbox", "0123abcd", 1, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := b.Forget(ctx, "hook_outbox", "0123abcd", done.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	added, _ = b.Append(ctx, "hook_outbox", []outbox.Add{{Queue: "0123abcd", ID: "evt_0", Record: []byte("{}")}, {Queue: "0123abcd", ID: "evt_1"}})
	if !added[0] || added[1] {
		t.Fatalf("after Forget: %v, want evt_0 forgotten, evt_1 (done later) remembered", added)
	}
	if n, _ := b.Queues(ctx, "hook_outbox"); n["0123abcd"] != 3 {
		t.Fatalf("pending %v, want evt_2, evt_3, evt_0", n)
	}
}
