package pace

import (
	"testing"
	"time"
)

// TestPacerRests: a pass that runs for many stretches of Work rests
// between them, and one shorter than Work never does.
func TestPacerRests(t *testing.T) {
	var p Pacer
	start := time.Now()
	for time.Since(start) < 20*Work {
		p.Step()
	}
	if p.Rests < 5 {
		t.Fatalf("%d rests in a pass of %v, want about one per %v of work", p.Rests, 20*Work, Work)
	}
	var short Pacer
	for range every * 4 {
		short.Step() // microseconds of work
	}
	if short.Rests != 0 {
		t.Fatalf("a pass shorter than %v rested %d times", Work, short.Rests)
	}
}

// TestPacerDue: Due reads the clock every `every` steps only, and says so
// only once the stretch of work is over.
func TestPacerDue(t *testing.T) {
	var p Pacer
	for i := 1; i < every; i++ {
		if p.Due() {
			t.Fatalf("due at step %d, before the first clock read", i)
		}
	}
	if p.Due() || p.next.IsZero() {
		t.Fatal("the first clock read started no stretch")
	}
	p.next = time.Now().Add(-time.Nanosecond) // the stretch is over
	for i := 1; i < every; i++ {
		if p.Due() {
			t.Fatalf("due at step %d between clock reads", i)
		}
	}
	if !p.Due() {
		t.Fatal("not due after the stretch was over")
	}
}
