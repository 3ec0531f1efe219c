package meter

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestStorageEvery(t *testing.T) {
	for _, tc := range []struct {
		counters int
		want     time.Duration
	}{
		{0, time.Minute},
		{1000, time.Minute},
		{60_000, time.Minute},
		{100_000, 100 * time.Second},
		{1_000_000, 1000 * time.Second},
		{10_000_000, time.Hour},
	} {
		if got := storageEvery(tc.counters); got != tc.want {
			t.Errorf("storageEvery(%d) = %v, want %v", tc.counters, got, tc.want)
		}
	}
}

// TestStorageHeldDuringBacklog: while the sink is down, storage is not
// turned into batches (a million sites' would be 2,000 of them, crowding
// the traffic out of MaxPending and the spool); it keeps accruing and goes
// out whole once the sink is back.
func TestStorageHeldDuringBacklog(t *testing.T) {
	ctx := context.Background()
	store := newMemUsage()
	sink := &flakySink{inner: store}
	start := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	clk := &clock{t: start}
	m, _ := newMeter(t, Config{}, sink, nil, clk)
	const sites = 3 * maxBatchDeltas
	for i := range sites {
		m.Counters("acme", fmt.Sprintf("s%d", i), "dir").SetStorage(10)
	}
	sink.set(true, false)
	const down = 150 // seconds, past two storage writes' time
	for range down {
		clk.t = clk.t.Add(time.Second)
		m.Counters("acme", "s0", "dir").AddEgress(7)
		if err := m.Flush(ctx); err == nil {
			t.Fatal("flush succeeded with the sink down")
		}
	}
	m.flushMu.Lock()
	for _, b := range m.pending {
		for _, d := range b.Deltas {
			if d.StorageByteSeconds != 0 {
				t.Errorf("storage of %s batched during the outage (batch %d of %d)", d.Site, b.Seq, len(m.pending))
			}
		}
	}
	if len(m.pending) != down {
		t.Errorf("%d batches pending after %d failed flushes, want one each (their traffic)", len(m.pending), down)
	}
	m.flushMu.Unlock()
	sink.set(false, false)
	clk.t = clk.t.Add(time.Second)
	mustFlush(t, m) // the backlog; storage waits for a flush without one
	clk.t = clk.t.Add(time.Second)
	mustFlush(t, m)
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got := totals(t, store, "acme", start, start.Add(time.Hour))
	if want := int64(sites * 10 * (down + 2)); got.StorageByteSeconds != want || got.EgressBytes != 7*down {
		t.Fatalf("after the outage: %d byte-seconds and %d egress bytes, want %d and %d", got.StorageByteSeconds, got.EgressBytes, want, 7*down)
	}
}

// slowSink takes each batch after a pause, as a busy Redis does.
type slowSink struct {
	inner Sink
	pause time.Duration
}

func (s slowSink) Apply(ctx context.Context, b *Batch) error {
	time.Sleep(s.pause)
	return s.inner.Apply(ctx, b)
}

// TestDrainAcrossFlushes: a backlog the sink takes longer than
// drainBudget flush intervals to apply is written over several flushes,
// each of them a success (readiness holds: the node is writing), and
// nothing is lost or applied twice.
func TestDrainAcrossFlushes(t *testing.T) {
	ctx := context.Background()
	store := newMemUsage()
	start := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	clk := &clock{t: start}
	const interval = 10 * time.Millisecond
	m, _ := newMeter(t, Config{FlushInterval: interval}, slowSink{inner: store, pause: 5 * time.Millisecond}, nil, clk)
	const sites = 40 * maxBatchDeltas // 40 batches, 200 ms for the sink; the budget is 50 ms
	for i := range sites {
		m.Counters(fmt.Sprintf("o%05d", i), "www", "dir").AddEgress(3)
	}
	clk.t = clk.t.Add(time.Second)
	mustFlush(t, m)
	left := m.Pending()
	if left == 0 || left >= 40 {
		t.Fatalf("%d of 40 batches left after one flush, want some sent and the rest left for the next flushes", left)
	}
	if err := m.Check(ctx); err != nil {
		t.Fatalf("readiness while draining: %v", err)
	}
	for i := 0; m.Pending() > 0; i++ {
		if i == 40 {
			t.Fatalf("%d batches still pending after 40 flushes", m.Pending())
		}
		clk.t = clk.t.Add(interval)
		mustFlush(t, m)
	}
	var egress int64
	for i := range sites {
		egress += totals(t, store, fmt.Sprintf("o%05d", i), start, start.Add(time.Hour)).EgressBytes
	}
	if egress != 3*sites {
		t.Fatalf("%d egress bytes written, want %d", egress, 3*sites)
	}
}
