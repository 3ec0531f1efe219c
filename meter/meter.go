// Package meter counts usage per org and per site: egress and ingress bytes,
// requests, and storage integrated over time. The request path only adds to
// in-memory atomics; a flusher writes the deltas in one batch per interval to
// a Sink (bbolt on the embedded default, Redis in a cluster: the store
// package implements both), idempotently, so a batch that may have been
// applied is simply sent again.
//
// What a crash can lose: a kill -9 loses what was counted since the last
// flush attempt (at most meter.flush_interval): a flush the sink refuses
// writes the whole backlog to the spool file (a Journal), whose disk space
// is reserved at start. SIGTERM flushes everything; if the sink refuses it
// then (a full disk, Redis away), the backlog is in the bbolt spool (with
// Redis) or the spool file, and is sent on the next start.
package meter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options are the meter's collaborators.
type Options struct {
	Sink  Sink  // required
	Spool Spool // optional: where batches go when the sink fails past MaxPending
	// Journal, optional, gets the whole backlog after every flush the sink
	// refused, so a kill loses at most one interval; what it holds at New
	// is sent first.
	Journal Journal
	Node    string                // required: this node's stable id
	Metrics prometheus.Registerer // required
	Logger  *slog.Logger
	Now     func() time.Time // default time.Now
	// StoreName labels the flush metrics: "bbolt" (default) or "redis".
	StoreName string
}

// Meter owns the counters and flushes them.
type Meter struct {
	cfg       Config
	storeName string
	sink      Sink
	spool     Spool
	node      string
	log       *slog.Logger
	now       func() time.Time
	m         *metrics

	mu sync.Mutex // guards table, storageGen, storageMeasured and storageOrgs
	// table holds the counters of every (org, site) seen (counters.go).
	table counterTable
	// storageGen counts the ReplaceStorage calls.
	storageGen uint32
	// storageMeasured: ReplaceStorage has run once (StorageByOrgOf).
	storageMeasured bool
	// storageOrgs is how many orgs StorageByOrgOf last returned (the size
	// of the next one's map).
	storageOrgs int

	flushMu   sync.Mutex // one flush at a time; guards the fields below
	seq       uint64
	pending   []*Batch
	lastFlush time.Time
	// lastStorage is when accrued storage was last written (collect).
	lastStorage time.Time
	journal     Journal
	journaled   bool  // the journal may hold batches
	journalOK   error // the last journal Save's error

	healthMu sync.Mutex // guards lastOK and lastErr (Check must not wait on a flush)
	lastOK   time.Time  // end of the last flush the sink took
	lastErr  error      // the last flush's error, nil after a success

	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	running atomic.Bool
}

// New returns a meter; Start flushes it periodically and Stop (or Close)
// flushes what is left.
func New(cfg Config, opts Options) (*Meter, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Sink == nil || opts.Node == "" || opts.Metrics == nil {
		return nil, errors.New("meter: Options.Sink, Node and Metrics are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.StoreName == "" {
		opts.StoreName = "bbolt"
	}
	m := &Meter{
		cfg: cfg, storeName: opts.StoreName, sink: opts.Sink, spool: opts.Spool, journal: opts.Journal, node: opts.Node, log: opts.Logger, now: opts.Now,
		// Sequence numbers start at the clock so they keep growing across
		// restarts: a node flushes far less than once per nanosecond.
		seq:  uint64(opts.Now().UnixNano()),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	m.lastFlush = opts.Now()
	m.lastStorage = m.lastFlush
	m.lastOK = m.lastFlush
	if m.journal != nil {
		kept, err := m.journal.Load()
		if err != nil {
			return nil, err
		}
		for _, b := range kept {
			// Sequence numbers keep growing past what was kept.
			m.seq = max(m.seq, b.Seq)
		}
		if len(kept) > 0 {
			m.pending, m.journaled = kept, true
			m.log.Info("meter: usage kept at the last stop is sent first", slog.Int("batches", len(kept)))
		}
	}
	m.m = newMetrics(opts.Metrics, cfg, m)
	m.m.lastOK.Set(float64(m.lastOK.UnixNano()) / 1e9)
	m.m.pending.Set(float64(len(m.pending)))
	return m, nil
}

// Start flushes every FlushInterval in the background until Stop or Close.
// It does not block and ctx is not used: the flushes run until stopped.
// Starting twice, or after Stop, starts nothing more.
func (m *Meter) Start(context.Context) error {
	if m.running.CompareAndSwap(false, true) {
		go m.run()
	}
	return nil
}

// Stop ends the periodic flushes and flushes everything within ctx, as
// Close does.
func (m *Meter) Stop(ctx context.Context) error { return m.Close(ctx) }

func (m *Meter) run() {
	defer close(m.done)
	t := time.NewTicker(m.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*m.cfg.FlushInterval+5*time.Second)
			if err := m.Flush(ctx); err != nil {
				m.log.Warn("meter flush failed; usage kept for the next one", slog.Any("err", err), slog.Int("pending_batches", m.Pending()))
			}
			cancel()
		}
	}
}

// Close stops the periodic flushes (if started) and flushes everything.
// What the sink cannot take is spooled when a Spool is set.
func (m *Meter) Close(ctx context.Context) error {
	m.once.Do(func() { close(m.stop) })
	if m.running.Load() {
		<-m.done // the periodic flush is over; the final one follows
	}
	err := m.flush(ctx, true)
	if err == nil {
		return nil
	}
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	var serr error
	if m.spool != nil {
		if serr = m.spool.Save(context.Background(), m.pending); serr == nil {
			m.log.Warn("meter: sink unreachable at shutdown; usage spooled locally for the next start", slog.Int("batches", len(m.pending)))
			m.pending = nil
			m.saveJournal()
			return nil
		}
	}
	if m.journal != nil && m.journalOK == nil {
		// The failed flush wrote the whole backlog to the journal.
		m.log.Warn("meter: the store refused the final flush; usage kept in the spool file for the next start", slog.Int("batches", len(m.pending)), slog.Any("err", err))
		m.pending = nil
		return nil
	}
	return fmt.Errorf("meter: final flush: %w", errors.Join(err, serr, m.journalOK))
}

// Check reports whether usage reaches the store: nil while a flush
// succeeded within the last three flush intervals, else the last flush's
// error. It is fast and safe for concurrent use (a readiness check).
func (m *Meter) Check(context.Context) error {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	late := m.now().Sub(m.lastOK)
	if late <= checkIntervals*m.cfg.FlushInterval {
		return nil
	}
	err := m.lastErr
	if err == nil {
		err = errors.New("a flush is still running")
	}
	return fmt.Errorf("no usage flush succeeded for %s: %w", late.Round(time.Millisecond), err)
}

// checkIntervals is how many flush intervals Check tolerates without a
// successful flush (one failure is retried before readiness changes).
const checkIntervals = 3

// Pending is how many batches wait for the sink in memory.
func (m *Meter) Pending() int {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	return len(m.pending)
}

// Flush takes the deltas counted so far and writes them, after any older
// batches still waiting, in order. Accrued storage is written as
// storageEvery says. A backlog that takes the sink longer than
// drainBudget is written over several flushes: what a flush leaves waits
// for the next one, and as long as batches go out, flushes succeed.
func (m *Meter) Flush(ctx context.Context) error { return m.flush(ctx, false) }

// flush is Flush; final writes all the accrued storage too (Close).
func (m *Meter) flush(ctx context.Context, final bool) error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	start := time.Now()
	m.pending = append(m.pending, m.collect(final, len(m.pending) > 0)...)
	budget := drainBudget * m.cfg.FlushInterval
	if final {
		budget = 0 // Close: everything, within ctx
	}
	err := m.drain(ctx, budget)
	m.m.flushDuration.Observe(time.Since(start).Seconds())
	m.m.pending.Set(float64(len(m.pending)))
	if err != nil {
		m.m.flushErrors.Inc()
		m.overflow(ctx)
	}
	if err != nil || m.journaled {
		// After a failure: the whole backlog, so a kill loses at most what
		// the next interval counts. After a success: empty it.
		m.saveJournal()
	}
	m.healthMu.Lock()
	m.lastErr = err
	if err == nil {
		m.lastOK = m.now()
		m.m.lastOK.Set(float64(m.lastOK.UnixNano()) / 1e9)
	}
	m.healthMu.Unlock()
	return err
}

// saveJournal writes the backlog to the journal; flushMu is held.
func (m *Meter) saveJournal() {
	if m.journal == nil {
		return
	}
	err := m.journal.Save(m.pending)
	if err != nil && m.journalOK == nil {
		m.log.Error("meter: usage backlog not written to the spool file; a kill now loses it", slog.Int("batches", len(m.pending)), slog.Any("err", err))
	}
	if err != nil {
		m.m.journalErrors.Inc()
	}
	m.journalOK = err
	m.journaled = err != nil || len(m.pending) > 0
}

// drainBudget is how many flush intervals a periodic flush spends on
// pending batches at most (the rest wait for the next flush): a million
// sites' storage is 2,000 batches, which a busy Redis takes tens of
// seconds to apply, longer than a flush's deadline (run).
const drainBudget = 5

// drain applies spooled batches, then pending ones, oldest first, stopping
// at the first failure so batches of one org are applied in Seq order.
// Past budget (0: none) it leaves the pending batches not sent yet for the
// next flush.
func (m *Meter) drain(ctx context.Context, budget time.Duration) error {
	if m.spool != nil {
		spooled, err := m.spool.Load(ctx)
		if err != nil {
			return fmt.Errorf("meter: reading spool: %w", err)
		}
		for _, b := range spooled {
			if err := m.sink.Apply(ctx, b); err != nil {
				return err
			}
			if err := m.spool.Remove(ctx, b.Seq); err != nil {
				return fmt.Errorf("meter: clearing spool: %w", err)
			}
		}
	}
	return m.drainPending(ctx, budget)
}

// drainPending applies the pending batches oldest first. A batch the sink
// applied for some orgs only (*NotAppliedError) is kept for the rest, and
// later batches still go out for every org that is not blocked: on Redis
// Cluster the orgs of healthy shards keep flushing while one shard fails
// over. Any other error stops the drain, and so does budget (0: none)
// spent, leaving the rest for the next flush.
func (m *Meter) drainPending(ctx context.Context, budget time.Duration) error {
	blocked := map[string]bool{}
	var partial error
	start := time.Now()
	kept := m.pending[:0] // filled behind the loop's index
	for i, b := range m.pending {
		if budget > 0 && i > 0 && time.Since(start) > budget {
			kept = append(kept, m.pending[i:]...)
			clear(m.pending[len(kept):])
			m.pending = kept
			return partial
		}
		send, held := splitBatch(b, blocked)
		if len(send.Deltas) > 0 {
			err := m.sink.Apply(ctx, send)
			var na *NotAppliedError
			switch {
			case err == nil:
				send.Deltas = nil
			case errors.As(err, &na):
				partial = cmp.Or(partial, err)
				for _, org := range na.Blocked {
					blocked[org] = true
				}
				retry := map[string]bool{}
				for _, org := range na.Retry {
					retry[org] = true
				}
				send.Deltas = slices.DeleteFunc(slices.Clone(send.Deltas), func(d Delta) bool { return !retry[d.Org] })
			default:
				kept = append(kept, m.pending[i:]...)
				clear(m.pending[len(kept):])
				m.pending = kept
				return err
			}
		}
		if rest := append(held, send.Deltas...); len(rest) > 0 {
			slices.SortFunc(rest, func(a, b Delta) int {
				return cmp.Or(strings.Compare(a.Org, b.Org), strings.Compare(a.Site, b.Site))
			})
			b.Deltas = rest
			kept = append(kept, b)
		}
	}
	clear(m.pending[len(kept):])
	m.pending = kept
	return partial
}

// splitBatch returns b without the deltas of the orgs in skip (a copy
// sharing nothing with b's deltas when skip is not empty) and those deltas.
func splitBatch(b *Batch, skip map[string]bool) (*Batch, []Delta) {
	if len(skip) == 0 {
		return b, nil
	}
	send := *b
	send.Deltas = nil
	var held []Delta
	for _, d := range b.Deltas {
		if skip[d.Org] {
			held = append(held, d)
		} else {
			send.Deltas = append(send.Deltas, d)
		}
	}
	return &send, held
}

// overflow bounds the memory held by unflushed batches.
func (m *Meter) overflow(ctx context.Context) {
	if len(m.pending) <= m.cfg.MaxPending {
		return
	}
	if m.spool != nil {
		if err := m.spool.Save(ctx, m.pending); err == nil {
			m.m.spooled.Add(float64(len(m.pending)))
			m.pending = nil
			m.m.pending.Set(0)
			return
		} else {
			m.log.Error("meter: spooling batches failed", slog.Any("err", err))
		}
	}
	drop := len(m.pending) - m.cfg.MaxPending
	m.log.Error("meter: dropping usage batches: the store has been unreachable too long", slog.Int("dropped", drop))
	m.m.dropped.Add(float64(drop))
	m.pending = slices.Delete(m.pending, 0, drop)
}
