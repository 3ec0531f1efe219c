package meter

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func batches(seqs ...uint64) []*Batch {
	var bs []*Batch
	for _, s := range seqs {
		bs = append(bs, &Batch{Node: "n1", Seq: s, Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
			Deltas: []Delta{{Org: "o", Site: "s", Values: Values{EgressBytes: int64(s) * 100, Requests: 1}}}})
	}
	return bs
}

func seqsOf(bs []*Batch) []uint64 {
	var out []uint64
	for _, b := range bs {
		out = append(out, b.Seq)
	}
	return out
}

func TestSpoolFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.spool")
	s, err := OpenSpoolFile(path, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 64<<10 {
		t.Fatalf("file size %d; want the 64 KiB reserved", fi.Size())
	}
	if bs, err := s.Load(); err != nil || bs != nil {
		t.Fatalf("new file: %v %v; want nothing", bs, err)
	}
	for _, want := range [][]uint64{{1}, {1, 2}, {2, 3, 4}} {
		if err := s.Save(batches(want...)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	t.Run("reopened", func(t *testing.T) {
		s, err := OpenSpoolFile(path, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		bs, err := s.Load()
		if got := seqsOf(bs); err != nil || len(got) != 3 || got[0] != 2 || got[2] != 4 {
			t.Fatalf("Load = %v, %v; want [2 3 4]", got, err)
		}
		if bs[2].Deltas[0].EgressBytes != 400 {
			t.Fatalf("deltas not kept: %+v", bs[2].Deltas)
		}
	})

	t.Run("torn latest copy falls back to the previous", func(t *testing.T) {
		// The third Save (generation 3) went to slot 1; damage its payload.
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("XX"), 32<<10+spoolHeaderLen+5)
		f.Close()
		s, err := OpenSpoolFile(path, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		bs, err := s.Load()
		if got := seqsOf(bs); err != nil || len(got) != 2 || got[1] != 2 {
			t.Fatalf("Load = %v, %v; want the previous copy [1 2]", got, err)
		}
		// The next Save goes to the damaged slot, over the torn copy.
		if err := s.Save(batches(5)); err != nil {
			t.Fatal(err)
		}
		if bs, _ := s.Load(); len(bs) != 1 || bs[0].Seq != 5 {
			t.Fatalf("after Save: %v", seqsOf(bs))
		}
	})

	t.Run("resized keeps the backlog", func(t *testing.T) {
		s, err := OpenSpoolFile(path, 128<<10)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if fi, _ := os.Stat(path); fi.Size() != 128<<10 {
			t.Fatalf("file size %d after resizing; want 128 KiB", fi.Size())
		}
		if bs, err := s.Load(); err != nil || len(bs) != 1 || bs[0].Seq != 5 {
			t.Fatalf("after resizing: %v, %v", seqsOf(bs), err)
		}
	})

	t.Run("backlog past a slot is refused", func(t *testing.T) {
		s, err := OpenSpoolFile(path, 128<<10)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		big := make([]uint64, 1000)
		for i := range big {
			big[i] = uint64(i + 10)
		}
		if err := s.Save(batches(big...)); !errors.Is(err, ErrSpoolFileFull) {
			t.Fatalf("Save of %d batches into a 64 KiB slot: %v; want ErrSpoolFileFull", len(big), err)
		}
		if bs, _ := s.Load(); len(bs) != 1 || bs[0].Seq != 5 {
			t.Fatalf("a refused Save changed the file: %v", seqsOf(bs))
		}
	})
}

// TestJournalKeepsRefusedFlushes: every flush the sink refuses leaves the
// whole backlog in the spool file; a meter started on that file (after a
// kill) sends it first, exactly once, and empties the file; a Close the sink
// refuses returns nil with the backlog in the file.
func TestJournalKeepsRefusedFlushes(t *testing.T) {
	ctx := context.Background()
	b := newMemUsage()
	sink := &flakySink{inner: b}
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "tollgate.db.spool")
	open := func() (*Meter, *SpoolFile) {
		t.Helper()
		sp, err := OpenSpoolFile(path, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		m, err := New(Config{FlushInterval: time.Second}, Options{Sink: sink, Journal: sp, Node: "n1", Metrics: prometheus.NewRegistry(), Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		return m, sp
	}
	m, sp := open()
	c := m.Counters("o", "s", "dir")
	c.AddEgress(1000)
	c.AddRequest()
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sink.set(true, false)
	for i := range 3 {
		c.AddEgress(10)
		c.AddRequest()
		clk.t = clk.t.Add(time.Second)
		if err := m.Flush(ctx); err == nil {
			t.Fatal("flush to a down sink succeeded")
		}
		if kept, _ := sp.Load(); len(kept) != i+1 {
			t.Fatalf("after %d refused flushes the spool file holds %d batches", i+1, len(kept))
		}
	}
	c.AddEgress(5) // counted after the last flush: what a kill loses
	kept, _ := sp.Load()
	sp.Close() // killed: no Close

	sink.set(false, false)
	m, sp = open()
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := totals(t, b, "o", clk.t.Add(-time.Hour), clk.t.Add(time.Hour))
	if got.EgressBytes != 1030 || got.Requests != 4 {
		t.Fatalf("after the kill and restart: %+v; want 1030 bytes, 4 requests", got)
	}
	if kept, _ := sp.Load(); len(kept) != 0 {
		t.Fatalf("the spool file still holds %d batches after they were sent", len(kept))
	}
	// Killed again before the file was emptied: the batches are sent
	// again and applied once only.
	if err := sp.Save(kept); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	m, sp = open()
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := totals(t, b, "o", clk.t.Add(-time.Hour), clk.t.Add(time.Hour)); got.EgressBytes != 1030 || got.Requests != 4 {
		t.Fatalf("the kept batches sent twice: %+v; want 1030 bytes, 4 requests", got)
	}

	// A SIGTERM the sink refuses: Close keeps the backlog in the file.
	c = m.Counters("o", "s", "dir")
	c.AddEgress(7)
	c.AddRequest()
	sink.set(true, false)
	if err := m.Close(ctx); err != nil {
		t.Fatalf("Close with the sink down and a spool file: %v", err)
	}
	sp.Close()
	sink.set(false, false)
	m, sp = open()
	defer sp.Close()
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got = totals(t, b, "o", clk.t.Add(-time.Hour), clk.t.Add(time.Hour))
	if got.EgressBytes != 1037 || got.Requests != 5 {
		t.Fatalf("after SIGTERM with the sink down: %+v; want 1037 bytes, 5 requests", got)
	}
}

// TestCheck: readiness fails, with the sink's error, once no flush has
// succeeded for three intervals, and holds again after one succeeds.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	b := newMemUsage()
	sink := &flakySink{inner: b}
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	m, _ := newMeter(t, Config{FlushInterval: time.Second}, sink, nil, clk)
	c := m.Counters("o", "s", "dir")
	sink.set(true, false)
	for i, want := range []bool{true, true, true, false, false} {
		c.AddRequest()
		clk.t = clk.t.Add(time.Second)
		m.Flush(ctx)
		err := m.Check(ctx)
		if (err == nil) != want {
			t.Fatalf("%d s after the last success: Check = %v; want ok=%v", i+1, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), "sink down") {
			t.Fatalf("Check does not say why: %v", err)
		}
	}
	sink.set(false, false)
	clk.t = clk.t.Add(time.Second)
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx); err != nil {
		t.Fatalf("after a successful flush: %v", err)
	}
}
