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

// TestPacerCheck: a pause point comes every `every` steps, and a pause
// rests only once the stretch of work is over.
func TestPacerCheck(t *testing.T) {
	var p Pacer
	for i := 1; i <= 3*every; i++ {
		if got, want := p.Check(), i%every == 0; got != want {
			t.Fatalf("step %d: pause point %v, want %v", i, got, want)
		}
	}
	p.Pause() // starts the stretch
	p.Pause()
	if p.Rests != 0 || p.next.IsZero() {
		t.Fatalf("rested %d times within the first stretch", p.Rests)
	}
	p.next = time.Now().Add(-time.Nanosecond) // the stretch is over
	p.Pause()
	if p.Rests != 1 || !p.next.After(time.Now()) {
		t.Fatalf("%d rests after the stretch was over, want 1 and a new stretch", p.Rests)
	}
}
