package meter

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordingSink keeps a copy of every batch it is given (the meter reuses
// a batch once applied).
type recordingSink struct {
	mu      sync.Mutex
	batches []*Batch
}

func (r *recordingSink) Apply(_ context.Context, b *Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := *b
	c.Deltas = slices.Clone(b.Deltas)
	r.batches = append(r.batches, &c)
	return nil
}

func (r *recordingSink) take() []*Batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.batches
	r.batches = nil
	return b
}

// TestStorageWrittenOncePerMinute: the storage of many idle sites costs a
// write a minute, not one per site per flush (with 1,000,000 sites each
// flush wrote 1,000,000 records, the node's main work), and what is
// written adds up to the exact byte-seconds, hour by hour, Close included.
func TestStorageWrittenOncePerMinute(t *testing.T) {
	ctx := context.Background()
	sink := &recordingSink{}
	clk := &clock{t: time.Date(2026, 11, 30, 23, 58, 0, 0, time.UTC)}
	m, _ := newMeter(t, Config{}, sink, nil, clk)
	const sites = 1000
	for i := range sites {
		m.Counters("acme", fmt.Sprintf("s%d", i), "dir").SetStorage(10)
	}
	storageDeltas := func(bs []*Batch) (n int, sum int64, hours map[int]int64) {
		hours = map[int]int64{}
		for _, b := range bs {
			for _, d := range b.Deltas {
				if d.StorageByteSeconds > 0 {
					n++
					sum += d.StorageByteSeconds
					hours[b.Time.Hour()] += d.StorageByteSeconds
				}
			}
		}
		return n, sum, hours
	}
	var total int64
	// 59 flushes a second apart: nothing written for storage.
	for range 59 {
		clk.t = clk.t.Add(time.Second)
		if err := m.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n, _, _ := storageDeltas(sink.take()); n != 0 {
		t.Fatalf("59 one-second flushes wrote %d storage records for %d idle sites, want none before a minute", n, sites)
	}
	// The 60th: a minute's worth, one record per site.
	clk.t = clk.t.Add(time.Second)
	mustFlush(t, m)
	n, sum, _ := storageDeltas(sink.take())
	if n != sites || sum != sites*10*60 {
		t.Fatalf("after a minute: %d records, %d byte-seconds; want %d and %d", n, sum, sites, sites*10*60)
	}
	total += sum
	// 30 s more, across midnight (and the month): the part before it is
	// written in November, the rest in December.
	clk.t = clk.t.Add(20 * time.Second) // 23:59:20
	mustFlush(t, m)
	clk.t = clk.t.Add(50 * time.Second) // 00:00:10
	mustFlush(t, m)
	_, sum, hours := storageDeltas(sink.take())
	if hours[23] != sites*10*20 {
		t.Errorf("storage written for 23:00 at the hour boundary: %d, want %d", hours[23], sites*10*20)
	}
	total += sum
	clk.t = clk.t.Add(5 * time.Second)
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, sum, hours = storageDeltas(sink.take())
	total += sum
	if want := int64(sites * 10 * (60 + 20 + 50 + 5)); total != want || hours[0] != sites*10*55 {
		t.Errorf("byte-seconds written in all: %d (00:00 hour at Close: %d); want %d (%d)", total, hours[0], want, sites*10*55)
	}
}

func mustFlush(t *testing.T, m *Meter) {
	t.Helper()
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestStorageWrittenInBoundedBatches: the minute's storage of many sites
// goes out as batches of at most maxBatchDeltas, with consecutive
// sequence numbers, each applied on its own (a registry write waits for
// one of them, not for all), and nothing is lost or doubled by the split.
func TestStorageWrittenInBoundedBatches(t *testing.T) {
	sink := &recordingSink{}
	clk := &clock{t: time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)}
	m, _ := newMeter(t, Config{}, sink, nil, clk)
	const sites = 5*maxBatchDeltas + 7
	for i := range sites {
		m.Counters(fmt.Sprintf("org%05d", i%1000), fmt.Sprintf("s%d", i), "dir").SetStorage(3)
	}
	m.Counters("org00001", "s1", "dir").AddEgress(99) // traffic rides in the same batches
	clk.t = clk.t.Add(time.Minute)
	mustFlush(t, m)
	bs := sink.take()
	if len(bs) != 6 {
		t.Fatalf("%d batches for %d sites, want 6 of at most %d", len(bs), sites, maxBatchDeltas)
	}
	seen := map[[2]string]bool{}
	var bytes, egress int64
	for i, b := range bs {
		if len(b.Deltas) > maxBatchDeltas || (i > 0 && b.Seq != bs[i-1].Seq+1) {
			t.Fatalf("batch %d: %d deltas, seq %d after %d", i, len(b.Deltas), b.Seq, bs[max(i-1, 0)].Seq)
		}
		for _, d := range b.Deltas {
			k := [2]string{d.Org, d.Site}
			if seen[k] {
				t.Fatalf("%v in two batches", k)
			}
			seen[k] = true
			bytes += d.StorageByteSeconds
			egress += d.EgressBytes
		}
	}
	if len(seen) != sites || bytes != sites*3*60 || egress != 99 {
		t.Fatalf("%d sites, %d byte-seconds, %d egress; want %d, %d, 99", len(seen), bytes, egress, sites, sites*3*60)
	}
}

// TestStorageByOrgOf: the orgs need leaves out are not in the answer, an
// org's sites add up, orgs that store nothing are left out, and need is
// not asked again for an org already in the answer.
func TestStorageByOrgOf(t *testing.T) {
	m, _ := newMeter(t, Config{}, newMemUsage(), nil, &clock{t: time.Now()})
	if _, ok := m.StorageByOrgOf(nil); ok {
		t.Fatal("answered before storage was measured")
	}
	s := StorageMap{}
	s.Set("a", "x", "dir", 100)
	s.Set("a", "y", "dir", 7)
	s.Set("b", "x", "dir", 50)
	s.Set("c", "z", "dir", 0)
	m.ReplaceStorage(s.Each)
	asked := map[string]int{}
	byOrg, ok := m.StorageByOrgOf(func(org string) bool { asked[org]++; return org != "b" })
	if !ok || len(byOrg) != 1 || byOrg["a"] != 107 {
		t.Fatalf("StorageByOrgOf(not b): %v, %v; want a: 107 only", byOrg, ok)
	}
	if asked["a"] != 1 || asked["b"] != 1 || asked["c"] != 0 {
		t.Fatalf("need asked %v; want a and b once, c (storing nothing) never", asked)
	}
	if all, _ := m.StorageByOrgOf(nil); len(all) != 2 || all["b"] != 50 {
		t.Fatalf("StorageByOrg: %v", all)
	}
}
