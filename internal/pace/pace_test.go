package pace

import (
	"testing"
	"time"
)

// spin busies the core for d.
func spin(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

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
	for range 512 {
		short.Step() // microseconds of work
	}
	if short.Rests != 0 {
		t.Fatalf("a pass shorter than %v rested %d times", Work, short.Rests)
	}
}

// TestPacerYieldsByTime: a pass of slow steps (10 µs each, site tending's
// kind) yields about every Yield, not every so many steps.
func TestPacerYieldsByTime(t *testing.T) {
	var p Pacer
	const steps = 400 // 4 ms of work
	for range steps {
		spin(10 * time.Microsecond)
		p.Step()
	}
	// 4 ms: about 80 pauses of 50 µs, each a yield or a rest.
	if got := p.Yields + p.Rests; got < 30 {
		t.Fatalf("%d pauses over %d steps of 10 µs, want one about every %v", got, steps, Yield)
	}
	if p.stride > 2 {
		t.Errorf("stride %d for 10 µs steps, want the clock read every step or two", p.stride)
	}
}

// TestPacerStride: cheap steps read the clock every so many steps, not
// every step.
func TestPacerStride(t *testing.T) {
	var p Pacer
	x := 0
	for i := range 200_000 {
		x += i // nanoseconds a step
		p.Step()
	}
	if p.stride < 16 {
		t.Fatalf("stride %d for steps of nanoseconds (sum %d), want the clock read every dozens of steps", p.stride, x)
	}
}

// TestPacerCheck: a pause point comes when a yield or a rest is due, and
// Pause does what is due.
func TestPacerCheck(t *testing.T) {
	var p Pacer
	if p.Check() {
		t.Fatal("the first step (it starts the clock) is a pause point")
	}
	if p.Check() || p.Check() {
		t.Fatal("a pause point right after the start")
	}
	p.Pause() // not at a pause point: nothing
	if p.Yields != 0 || p.Rests != 0 {
		t.Fatalf("Pause away from a pause point yielded %d and rested %d times", p.Yields, p.Rests)
	}
	p.stride, p.n = 1, 0
	p.yielded = time.Now().Add(-Yield) // a yield is due
	if !p.Check() {
		t.Fatal("no pause point once Yield went by")
	}
	p.Pause()
	if p.Yields != 1 || p.Rests != 0 {
		t.Fatalf("yields %d, rests %d; want 1 and 0", p.Yields, p.Rests)
	}
	p.stride, p.n = 1, 0
	p.next = time.Now().Add(-time.Nanosecond) // the stretch is over
	if !p.Check() {
		t.Fatal("no pause point once Work went by")
	}
	p.Pause()
	if p.Rests != 1 || !p.next.After(time.Now()) {
		t.Fatalf("%d rests after the stretch was over, want 1 and a new stretch", p.Rests)
	}
}
