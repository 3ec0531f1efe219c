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
//
// Between rests it yields every Yield of running, so a goroutine ready to
// run (a registry write back from its fsync, say) waits for a sliver of a
// pass, not for a whole stretch of Work. The yields are timed, not counted:
// site tending spends about 10 µs a site, the meter's collect 40 ns a
// counter, and a yield every 128 steps let a registry write at 100,000
// sites wait 1.3 ms at each of its four hand-overs (its read, two fsyncs,
// its answer) behind site tending's round after an import. The clock is
// read every few steps, as many as take about CheckGap. Resting costs a
// pass up to Rest/Work more wall time, not CPU; yielding about 0.5 % of its
// CPU.
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
	// Yield is how long a pass runs between two yields.
	Yield = 50 * time.Microsecond
	// CheckGap is about how long goes between two reads of the clock: the
	// steps between them double while they take less than half of it, and
	// halve while they take more than twice.
	CheckGap = 10 * time.Microsecond
	// maxStride bounds the steps between two reads of the clock.
	maxStride = 1024
)

// due is what a pause point is for.
type due uint8

const (
	dueNone  due = iota
	dueYield     // runtime.Gosched
	dueRest      // time.Sleep(Rest)
)

// Pacer paces one pass. The zero Pacer is ready: its first Check starts
// the clock. It is not safe for concurrent use.
type Pacer struct {
	n, stride int
	last      time.Time // the last read of the clock
	yielded   time.Time // the last yield or rest
	next      time.Time // when the pass is due to rest
	due       due
	// Rests and Yields count the rests and yields taken (tests read them).
	Rests, Yields int
}

// Check counts one step of the pass and reports whether it is a pause
// point (the pass has run Yield since its last yield, or Work since its
// last rest): call Pause then, after releasing any lock other work needs,
// since Pause gives the core away.
func (p *Pacer) Check() bool {
	p.n++
	if p.n < p.stride {
		return false
	}
	p.n = 0
	now := time.Now()
	if p.next.IsZero() {
		p.stride, p.last, p.yielded, p.next = 1, now, now, now.Add(Work)
		return false
	}
	switch gap := now.Sub(p.last); {
	case gap < CheckGap/2 && p.stride < maxStride:
		p.stride *= 2
	case gap > 2*CheckGap && p.stride > 1:
		p.stride /= 2
	}
	p.last = now
	switch {
	case !now.Before(p.next):
		p.due = dueRest
	case now.Sub(p.yielded) >= Yield:
		p.due = dueYield
	default:
		return false
	}
	return true
}

// Pause, at a pause point, rests for Rest once the pass has run for Work
// since its last rest, and otherwise yields the core (runtime.Gosched).
// Elsewhere it does nothing.
func (p *Pacer) Pause() {
	switch p.due {
	case dueRest:
		time.Sleep(Rest)
		p.Rests++
		now := time.Now()
		p.next, p.yielded = now.Add(Work), now
	case dueYield:
		runtime.Gosched()
		p.Yields++
		p.yielded = time.Now()
	}
	p.due = dueNone
}

// Step counts one step and pauses at a pause point: Check, then Pause.
func (p *Pacer) Step() {
	if p.Check() {
		p.Pause()
	}
}
