package billing

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
)

// TestStartEvaluatesUntilStop: Start evaluates at once, not after the
// first enforce_interval; Stop waits for the loop and is safe twice; a
// Start after Stop starts nothing.
func TestStartEvaluatesUntilStop(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	gate := f.b.Gate("acme")
	f.usage.set("acme", 1500)
	if err := f.b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for gate.Decision() != access.BlockQuota {
		if time.Now().After(deadline) {
			t.Fatalf("no evaluation within 10s of Start: %v", gate.Decision())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronization
	}
	for range 2 {
		if err := f.b.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-f.b.done:
	default:
		t.Fatal("Stop returned before the evaluations ended")
	}

	g := newFixture(t)
	if err := g.b.Stop(ctx); err != nil { // before Start
		t.Fatal(err)
	}
	if err := g.b.Start(ctx); err != nil || g.b.cancel != nil {
		t.Fatalf("Start after Stop: %v, started: %t", err, g.b.cancel != nil)
	}
}
