package main

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/sites"
)

// Bulk writes (an import, a follower applying one from another node) leave
// the heap at its collector's goal: with server.gc_percent 50, half as much
// again as the registry, plus the garbage of the import's JSON and copied
// shards, which Go's scavenger hands back to the OS slowly. At a million
// sites that is the difference between about 1 GB and 1.5 GB of RSS. Once
// such a burst is over, the settler collects and returns that memory once,
// as start-up does after its load (serve.go, openRegistry).
const (
	// settleAfter is how many records a burst changes before it is worth a
	// full collection: a thousand-record import batch is not, a migration
	// of ten thousand sites is. A burst must also change a tenth of the
	// registry (settleShare): a collection costs what the heap holds (1.5
	// to 4 s of a core at a million sites), the garbage it returns is what the
	// burst left, and anyone who may write records must not be able to buy
	// full collections with small bursts.
	settleAfter = 10_000
	settleShare = 10
	// settleQuiet is how long the registry must go without a write before
	// the settler runs: a burst's batches come back to back, and a write
	// arriving during a full collection would wait for it.
	settleQuiet = time.Second
)

// settler returns the heap to the OS once after each burst of registry
// writes of at least settleAfter records and a tenth of the registry, when
// the registry has gone settleQuiet without a write.
type settler struct {
	after int
	quiet time.Duration
	free  func() // debug.FreeOSMemory; tests count calls instead
	log   *slog.Logger
	runs  prometheus.Counter

	mu      sync.Mutex
	pending int         // records changed since the last run
	timer   *time.Timer // nil until the first burst; stopped by Close
	armed   bool        // the timer is set for a burst
	running bool        // free runs
	loaded  bool        // the registry as loaded at start was noted
	closed  bool
}

// newSettler returns a settler following reg's writes, counting its runs in
// tollgate_memory_returns_total; tollgate_memory_return_pending is 1 from
// the write that makes a burst until its memory is returned.
func newSettler(reg *sites.Registry, metrics prometheus.Registerer, log *slog.Logger) *settler {
	s := &settler{after: settleAfter, quiet: settleQuiet, free: debug.FreeOSMemory, log: log,
		runs: prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_memory_returns_total",
			Help: "Times the heap was collected and returned to the OS after a burst of registry writes."})}
	metrics.MustRegister(s.runs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_memory_return_pending",
		Help: "1 while a burst of registry writes waits for its quiet second or its memory is being returned."},
		func() float64 {
			if s.pendingReturn() {
				return 1
			}
			return 0
		}))
	reg.OnChange(s.noteChange)
	return s
}

// noteChange counts the records d changed and, past s.after of them and a
// tenth of the registry since the last run, (re)starts the quiet period.
// A nil Delta is a whole registry loaded: the first call (start-up, which
// returned its memory) counts nothing, a later one (a follower's full load
// after a gap, Registry.Reload) counts every record.
func (s *settler) noteChange(snap *sites.Snapshot, d *sites.Delta) {
	size := snap.Plans.Len() + snap.Orgs.Len() + snap.Sites.Len() + snap.Domains.Len()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.loaded:
		s.loaded = true
		return
	case d == nil:
		s.pending += size
	default:
		s.pending += len(d.Plans) + len(d.Orgs) + len(d.Sites) + len(d.Domains)
	}
	if s.pending < s.after || s.pending < size/settleShare || s.closed {
		return
	}
	s.armed = true
	if s.timer == nil {
		s.timer = time.AfterFunc(s.quiet, s.run)
		return
	}
	s.timer.Reset(s.quiet)
}

// pendingReturn reports whether a burst waits for its return or is being
// returned.
func (s *settler) pendingReturn() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.armed || s.running
}

// run collects and returns the heap, unless the settler was closed.
func (s *settler) run() {
	s.mu.Lock()
	s.armed = false
	if s.closed || s.pending < s.after {
		s.mu.Unlock()
		return
	}
	n := s.pending
	s.pending, s.running = 0, true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	s.free()
	runtime.ReadMemStats(&after)
	s.runs.Inc()
	s.log.Info("returned memory after a burst of registry writes", slog.Int("records", n),
		slog.Duration("took", time.Since(t0)), slog.Uint64("heap_mb", after.HeapInuse>>20),
		slog.Uint64("returned_mb", (after.HeapReleased-min(after.HeapReleased, before.HeapReleased))>>20))
}

// Close stops a pending run; one already running finishes.
func (s *settler) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	return nil
}
