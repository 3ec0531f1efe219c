package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
)

func totals(t *testing.T, r meter.Reader, org string, from, to time.Time) meter.Values {
	t.Helper()
	pts, err := r.Hourly(context.Background(), org, from, to)
	if err != nil {
		t.Fatal(err)
	}
	_, v, err := meter.Aggregate(pts, meter.StepMonth)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestBoltApplyAndRead(t *testing.T) { testApplyAndRead(t, openBoltSink(t)) }

func TestBoltApplyIsIdempotent(t *testing.T) {
	ctx := context.Background()
	b := openBoltSink(t)
	at := time.Date(2026, 5, 5, 5, 5, 0, 0, time.UTC)
	batch := func(node string, seq uint64, n int64) *meter.Batch {
		return &meter.Batch{Node: node, Seq: seq, Time: at, Deltas: []meter.Delta{{Org: "o", Site: "s", Values: meter.Values{EgressBytes: n}}}}
	}
	steps := []struct {
		b    *meter.Batch
		want int64
	}{
		{batch("n1", 1795000000000000001, 10), 10},
		{batch("n1", 1795000000000000001, 10), 10}, // replay
		{batch("n1", 1795000000000000000, 99), 10}, // older
		{batch("n2", 1795000000000000001, 5), 15},  // same seq, other node
		{batch("n1", 1795000000000000002, 1), 16},
	}
	for i, s := range steps {
		if err := b.Apply(ctx, s.b); err != nil {
			t.Fatal(err)
		}
		if got := totals(t, b, "o", at.Add(-time.Hour), at.Add(time.Hour)).EgressBytes; got != s.want {
			t.Fatalf("step %d: egress %d; want %d", i, got, s.want)
		}
	}
}

func TestBoltNodeID(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	st, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	id, err := st.NodeID(ctx)
	if err != nil || len(id) != 16 {
		t.Fatalf("NodeID = %q, %v; want 16 hex digits", id, err)
	}
	st.Close()
	st, err = Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if again, err := st.NodeID(ctx); err != nil || again != id {
		t.Fatalf("after reopening: NodeID = %q, %v; want %q", again, err, id)
	}
}
