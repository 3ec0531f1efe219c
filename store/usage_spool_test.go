package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/meter"
	bolt "go.etcd.io/bbolt"
)

func openBolt(t testing.TB) *Bolt {
	t.Helper()
	st, err := Open(Config{Path: filepath.Join(t.TempDir(), "tollgate.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openSpool(t testing.TB, st *Bolt) (*UsageSpool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	sp, err := NewUsageSpool(context.Background(), st, UsageSpoolOptions{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	return sp, reg
}

var spoolAt = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func spoolBatch(seq uint64) *meter.Batch {
	return &meter.Batch{Node: "n1", Seq: seq, Time: spoolAt, Deltas: []meter.Delta{{Org: "o", Site: "s", Values: meter.Values{EgressBytes: int64(seq % 1000)}}}}
}

// writeOldSpool writes records into the flat bucket meter_spool as tollgate
// did before the spool was an outbox: Seq (big-endian) → batch JSON.
func writeOldSpool(t *testing.T, st *Bolt, recs map[uint64][]byte) {
	t.Helper()
	err := st.Update(context.Background(), func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte(bktSpool))
		if err != nil {
			return err
		}
		for seq, v := range recs {
			if err := bk.Put(binary.BigEndian.AppendUint64(nil, seq), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUsageSpool: spooled batches come back whole, in Seq order, until
// removed; one saved twice is queued once; a reopened spool counts what it
// holds.
func TestUsageSpool(t *testing.T) {
	ctx := context.Background()
	st := openBolt(t)
	s, reg := openSpool(t, st)
	if err := s.Save(ctx, []*meter.Batch{spoolBatch(1795000000000000002), spoolBatch(1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, []*meter.Batch{spoolBatch(300), spoolBatch(1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, 300); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, 12345); err != nil {
		t.Fatalf("Remove of a batch not spooled: %v", err)
	}
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []*meter.Batch{spoolBatch(1), spoolBatch(1795000000000000002)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Load = %+v, want %+v", got, want)
	}
	if p, a := metricValue(t, reg, "tollgate_meter_spool_batches", ""), metricValue(t, reg, "tollgate_meter_spool_drained_batches_total", "applied"); p != 2 || a != 1 {
		t.Fatalf("tollgate_meter_spool_batches %v, applied %v; want 2 and 1", p, a)
	}
	again, _ := openSpool(t, st)
	if again.Pending() != 2 {
		t.Fatalf("reopened spool: pending %d; want 2", again.Pending())
	}
}

// TestUsageSpoolOldLayout: batches an older tollgate left in the flat bucket
// meter_spool are moved into the spool outbox at start, once, in Seq order,
// and a meter then drains them to its sink; an unreadable one is dropped and
// counted, not left to block the rest.
func TestUsageSpoolOldLayout(t *testing.T) {
	ctx := context.Background()
	st := openBolt(t)
	old := map[uint64][]byte{}
	for _, seq := range []uint64{1795000000000000002, 7, 1795000000000000001} {
		v, _ := json.Marshal(spoolBatch(seq))
		old[seq] = v
	}
	old[9] = []byte("{not json")
	writeOldSpool(t, st, old)

	sp, reg := openSpool(t, st)
	if sp.Pending() != 4 {
		t.Fatalf("after the upgrade: %d pending; want 4", sp.Pending())
	}
	err := st.View(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket([]byte(bktSpool)) != nil {
			t.Error("the old meter_spool bucket is still there")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Moving is idempotent: a batch found again in an old bucket is not
	// queued twice, and a start without one changes nothing.
	writeOldSpool(t, st, map[uint64][]byte{7: old[7]})
	if moved, err := st.adoptOldSpool(ctx); err != nil || moved != 0 {
		t.Fatalf("second move: %d moved, %v; want 0", moved, err)
	}
	if moved, err := st.adoptOldSpool(ctx); err != nil || moved != 0 {
		t.Fatalf("move without the old bucket: %d moved, %v; want 0", moved, err)
	}

	sink := openBoltSink(t)
	m, err := meter.New(meter.Config{}, meter.Options{Sink: sink, Spool: sp, Node: "n1", Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := totals(t, sink, "o", spoolAt.Add(-time.Hour), spoolAt.Add(time.Hour)).EgressBytes; got != 7+1+2 {
		t.Fatalf("egress drained from the old spool = %d; want 10", got)
	}
	if left, err := sp.Load(ctx); err != nil || len(left) != 0 || sp.Pending() != 0 {
		t.Fatalf("left in the spool: %v (pending %d), %v", left, sp.Pending(), err)
	}
	const drained = "tollgate_meter_spool_drained_batches_total"
	if a, d, p := metricValue(t, reg, drained, "applied"), metricValue(t, reg, drained, "dropped"), metricValue(t, reg, "tollgate_meter_spool_batches", ""); a != 3 || d != 1 || p != 0 {
		t.Fatalf("applied %v, dropped %v, pending %v; want 3, 1 and 0", a, d, p)
	}
}

// metricValue is the value of a gauge (result "") or of a counter's series
// with label result.
func metricValue(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result == "" {
				return m.GetGauge().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s %s", name, result)
	return 0
}
