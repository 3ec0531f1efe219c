package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// newTestSettler follows a fresh registry; it settles after `after`
// records and `quiet` without a write, and counts its runs in *freed.
func newTestSettler(t *testing.T, after int, quiet time.Duration) (*sites.Registry, *settler, *atomic.Int32, chan struct{}) {
	t.Helper()
	reg, err := sites.New(context.Background(), storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	s := newSettler(reg, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { s.Close() })
	var freed atomic.Int32
	done := make(chan struct{}, 10)
	s.after, s.quiet = after, quiet
	s.free = func() { freed.Add(1); done <- struct{}{} }
	return reg, s, &freed, done
}

func createOrgs(t *testing.T, reg *sites.Registry, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := reg.CreateOrg(context.Background(), sites.Org{ID: fmt.Sprintf("o-%d", i), Plan: sites.FreePlan.Name}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSettlerReturnsMemoryOnceAfterABurst(t *testing.T) {
	reg, s, freed, done := newTestSettler(t, 5, 50*time.Millisecond)
	createOrgs(t, reg, 0, 4)
	s.mu.Lock()
	armed := s.timer != nil
	s.mu.Unlock()
	if armed {
		t.Fatal("4 records, fewer than 5: the settler armed")
	}
	createOrgs(t, reg, 4, 6)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("10 records written, then quiet: no collection within 10 s")
	}
	// The counter goes up once the memory is returned, after free.
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(s.runs) != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tollgate_memory_returns_total = %v 10 s after the collection, want 1", testutil.ToFloat64(s.runs))
		}
	}
	// The burst is spent: one write more is not another burst.
	createOrgs(t, reg, 10, 1)
	s.run() // what the timer would do
	if n := freed.Load(); n != 1 {
		t.Errorf("collections after 1 write past the burst: %d, want 1", n)
	}
}

func TestSettlerWaitsForQuiet(t *testing.T) {
	reg, _, freed, _ := newTestSettler(t, 1, time.Hour)
	createOrgs(t, reg, 0, 50)
	if n := freed.Load(); n != 0 {
		t.Errorf("collected %d times during the burst (quiet 1 h)", n)
	}
}

func TestSettlerClosed(t *testing.T) {
	reg, s, freed, _ := newTestSettler(t, 1, time.Hour)
	createOrgs(t, reg, 0, 3)
	s.Close()
	s.run() // a timer that fired as Close ran
	createOrgs(t, reg, 3, 3)
	if n := freed.Load(); n != 0 {
		t.Errorf("a closed settler collected %d times", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer.Stop() {
		t.Error("Close left the timer pending")
	}
}

// TestSettlerBurstIsATenthOfTheRegistry: after a return, a burst must
// change a tenth of the registry again before the next: small bursts
// cannot buy full collections of a large heap.
func TestSettlerBurstIsATenthOfTheRegistry(t *testing.T) {
	reg, s, freed, _ := newTestSettler(t, 1, time.Hour)
	createOrgs(t, reg, 0, 100)
	if !s.pendingReturn() {
		t.Fatal("100 records written: no return pending")
	}
	s.run() // what the timer does after the quiet period
	if n := freed.Load(); n != 1 || s.pendingReturn() {
		t.Fatalf("collections %d, pending %v; want 1 and false", n, s.pendingReturn())
	}
	size := reg.Snapshot().Orgs.Len() + reg.Snapshot().Plans.Len()
	createOrgs(t, reg, 100, size/settleShare-1)
	if s.pendingReturn() {
		t.Fatalf("%d records written into a registry of %d: a return is pending", size/settleShare-1, size)
	}
	createOrgs(t, reg, 100+size/settleShare-1, 2)
	if !s.pendingReturn() {
		t.Fatalf("%d records written into a registry of %d: no return pending", size/settleShare+1, size)
	}
}

// TestSettlerAfterAFullLoad: a whole registry loaded again (a follower's
// full load, a nil Delta after the first) is a burst of every record; the
// load at start is not.
func TestSettlerAfterAFullLoad(t *testing.T) {
	reg, s, _, _ := newTestSettler(t, 1, time.Hour)
	if s.pendingReturn() {
		t.Fatal("the registry as loaded at start made a return pending")
	}
	createOrgs(t, reg, 0, 3)
	s.run()
	s.noteChange(reg.Snapshot(), nil) // what Registry.Reload publishes
	if !s.pendingReturn() {
		t.Fatal("a full load of the registry: no return pending")
	}
}
