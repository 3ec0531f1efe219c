// Package pace lets the passes over every site, org or counter that run
// beside request serving give the core back.
//
// A node of a million sites runs several such passes: the meter's collect
// every second, billing's pass, site tending. On one core, a pass that
// yields with runtime.Gosched stays runnable, and while anything is
// runnable the Go scheduler polls the network only from sysmon, every
// 10 ms: every network step of a request (a change read from Redis, a
// request read from a client) then waits up to 10 ms, and right after a
// start, with the passes overlapping, a write followed from another node
// waited up to 200 ms. A paced pass also rests: after about Work of
// running it sleeps Rest, and while every pass rests the core is idle and
// the netpoller hands ready connections to their goroutines at once.
// Between rests it still yields every few hundred steps, so a request's
// goroutine ready to run waits for a sliver of a pass, not for a whole
// stretch of Work (a registry write took 20 ms at the 99th percentile
// when the passes held the core for a millisecond at a time). Resting
// costs a pass up to Rest/Work more wall time, not CPU.
package pace

import (
	"runtime"
	"time"
)

const (
	// Work is how long a pass runs between two rests.
	Work = time.Millisecond
	// Rest is how long it sleeps then: Go's timers on an idle core wake
	// after a millisecond at the earliest anyway.
	Rest = time.Millisecond
	// every is how many steps go between two reads of the clock, each
	// with a yield.
	every = 128
)

// Pacer paces one pass. The zero Pacer is ready: its first Step starts
// the clock. It is not safe for concurrent use.
type Pacer struct {
	n    int
	next time.Time // when the pass is due to rest
	// Rests counts the rests taken (tests read it).
	Rests int
}

// Check counts one step of the pass and reports whether it is a pause
// point (every `every` steps): call Pause then, after releasing any lock
// other work needs, since Pause gives the core away.
func (p *Pacer) Check() bool {
	p.n++
	return p.n%every == 0
}

// Pause, at a pause point, rests for Rest once the pass has run for Work
// since its last rest, and otherwise yields the core (runtime.Gosched).
func (p *Pacer) Pause() {
	now := time.Now()
	switch {
	case p.next.IsZero():
		p.next = now.Add(Work)
	case !now.Before(p.next):
		time.Sleep(Rest)
		p.Rests++
		p.next = time.Now().Add(Work)
		return
	}
	runtime.Gosched()
}

// Step counts one step and pauses at a pause point: Check, then Pause.
func (p *Pacer) Step() {
	if p.Check() {
		p.Pause()
	}
}
