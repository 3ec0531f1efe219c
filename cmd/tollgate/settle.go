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
	// of ten thousand sites is.
	settleAfter = 10_000
	// settleQuiet is how long the registry must go without a write before
	// the settler runs: a burst's batches come back to back, and a write
	// arriving during a full collection would wait for it.
	settleQuiet = time.Second
)

// settler returns the heap to the OS once after each burst of registry
// writes of at least settleAfter records, when the registry has gone
// settleQuiet without a write.
type settler struct {
	after int
	quiet time.Duration
	free  func() // debug.FreeOSMemory; tests count calls instead
	log   *slog.Logger
	runs  prometheus.Counter

	mu      sync.Mutex
	pending int         // records changed since the last run
	timer   *time.Timer // nil until the first burst; stopped by Close
	closed  bool
}

// newSettler returns a settler following reg's writes, counting its runs in
// tollgate_memory_returns_total.
func newSettler(reg *sites.Registry, metrics prometheus.Registerer, log *slog.Logger) *settler {
	s := &settler{after: settleAfter, quiet: settleQuiet, free: debug.FreeOSMemory, log: log,
		runs: prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_memory_returns_total",
			Help: "Times the heap was collected and returned to the OS after a burst of registry writes."})}
	metrics.MustRegister(s.runs)
	reg.OnChange(s.noteChange)
	return s
}

// noteChange counts the records d changed and, past s.after of them since
// the last run, (re)starts the quiet period. The first call (a nil Delta:
// the registry as loaded) counts nothing: start-up returned its memory.
func (s *settler) noteChange(_ *sites.Snapshot, d *sites.Delta) {
	if d == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending += len(d.Plans) + len(d.Orgs) + len(d.Sites) + len(d.Domains)
	if s.pending < s.after || s.closed {
		return
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(s.quiet, s.run)
		return
	}
	s.timer.Reset(s.quiet)
}

// run collects and returns the heap, unless the settler was closed.
func (s *settler) run() {
	s.mu.Lock()
	if s.closed || s.pending < s.after {
		s.mu.Unlock()
		return
	}
	n := s.pending
	s.pending = 0
	s.mu.Unlock()

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
