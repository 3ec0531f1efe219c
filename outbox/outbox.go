// Package outbox keeps records bound for another system in durable queues
// until they are delivered.
//
// An Outbox owns the bookkeeping every such queue needs: each record's id
// (a record is queued once per id), its attempts, the time of its next
// attempt after a failure (exponential backoff with jitter), its last
// error, the pending count and the result counters. Its user sends the
// records, decides what a failure means and when to give one up, and runs
// the loop (one worker per queue, or a periodic pass). The queues live in
// a Store that this package declares; *store.Bolt implements it.
//
// Hook deliveries (billing/hooks), Stripe meter events (billing/stripe)
// and the meter's spool of usage batches (store.UsageSpool) use it.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Store keeps the queues of outboxes. Within a box (one Outbox), each queue
// holds records in the order they were appended, each under a sequence
// number above 0, and remembers ids: those of its pending records and
// those acknowledged and not yet forgotten. Every method is one
// transaction and must be safe for concurrent use. *store.Bolt implements
// it.
type Store interface {
	// Append adds each record to the end of its queue, all in one
	// transaction, except one whose queue remembers its ID (an empty ID is
	// never remembered). added[i] reports whether adds[i] was added.
	Append(ctx context.Context, box string, adds []Add) (added []bool, err error)
	// Queued calls fn with the sequence number and record of each pending
	// record of queue, oldest first, until fn returns false. record is only
	// valid during the call. A missing queue is empty.
	Queued(ctx context.Context, box, queue string, fn func(seq uint64, record []byte) bool) error
	// Rewrite replaces pending record seq of queue; a record no longer
	// pending stays gone.
	Rewrite(ctx context.Context, box, queue string, seq uint64, record []byte) error
	// Ack removes record seq from queue and remembers id as done at at, or
	// forgets id at once when at is zero. removed reports whether the
	// record was pending.
	Ack(ctx context.Context, box, queue string, seq uint64, id string, at time.Time) (removed bool, err error)
	// Forget forgets the ids of queue done before t.
	Forget(ctx context.Context, box, queue string, t time.Time) error
	// Queues returns every queue of box with its number of pending records.
	Queues(ctx context.Context, box string) (map[string]int, error)
}

// Add is one record appended to a queue (Store.Append).
type Add struct {
	Queue  string
	ID     string
	Record []byte
}

// Item is the outbox's part of a record: the id it is queued once by and
// its delivery state. A record type embeds it (by value), so that these
// fields sit beside the record's own in its JSON.
type Item struct {
	ID        string    `json:"id"`
	Queued    time.Time `json:"queued"`
	Attempts  int       `json:"attempts,omitempty"`
	Next      time.Time `json:"next,omitzero"` // next attempt due (zero: now)
	LastError string    `json:"last_error,omitempty"`

	queue string // where it was read from
	seq   uint64
}

func (it *Item) item() *Item { return it }

// Seq is the record's position in its queue, 0 until it is read back from
// the outbox.
func (it *Item) Seq() uint64 { return it.seq }

// Record is a pointer to a record type R that embeds Item.
type Record[R any] interface {
	*R
	item() *Item
}

// Names are an outbox's metric names, kept by its user.
type Names struct {
	// Results counts results by label "result": Delivered, "retry"
	// (failed, kept for a later attempt) and "dropped" (given up).
	Results, ResultsHelp string
	// Delivered is the result label of a delivered record ("ok", "sent").
	Delivered string
	// Pending is the gauge of records waiting.
	Pending, PendingHelp string
}

// Config is an Outbox's collaborators and settings.
type Config struct {
	Store Store  // required
	Box   string // required: the outbox's name in Store, one Outbox per box
	// Queues are the queues the outbox serves. Records pending in other
	// queues of the box are kept, not counted (see Stray).
	Queues  []string
	Metrics prometheus.Registerer // required
	Names   Names                 // required: Results, Delivered and Pending
	Logger  *slog.Logger          // default slog.Default()
	Now     func() time.Time      // default time.Now: queued, next attempt and done times
	// Backoff is the wait after the n-th failed attempt (n ≥ 1). Default:
	// Backoff(n, time.Second, 10*time.Minute).
	Backoff func(n int) time.Duration
	// Remember is how long the id of a delivered or dropped record keeps
	// Add from queueing it again. 0: only while it is pending.
	Remember time.Duration
}

// Validate reports every missing field.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil || c.Box == "" || c.Metrics == nil {
		errs = append(errs, errors.New("outbox: Config.Store, Box and Metrics are required"))
	}
	if c.Names.Results == "" || c.Names.Delivered == "" || c.Names.Pending == "" {
		errs = append(errs, errors.New("outbox: Config.Names.Results, Delivered and Pending are required"))
	}
	if c.Remember < 0 {
		errs = append(errs, errors.New("outbox: Config.Remember must not be negative"))
	}
	return errors.Join(errs...)
}

// Outbox is a set of durable queues of records of type R. It is safe for
// concurrent use; records of one queue are best handled by one goroutine
// (their order is the queue's).
type Outbox[R any, P Record[R]] struct {
	st       Store
	box      string
	log      *slog.Logger
	now      func() time.Time
	backoff  func(n int) time.Duration
	remember time.Duration
	pending  map[string]*atomic.Int64 // per served queue; the map is fixed by New
	stray    map[string]int           // queues not served that hold records, as New found them

	delivered, retried, dropped prometheus.Counter
}

// New opens the outbox: it counts what each queue holds (pending from a
// previous process) and registers the metrics.
func New[R any, P Record[R]](cfg Config) (*Outbox[R, P], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func(n int) time.Duration { return Backoff(n, time.Second, 10*time.Minute) }
	}
	o := &Outbox[R, P]{st: cfg.Store, box: cfg.Box, log: cfg.Logger, now: cfg.Now, backoff: cfg.Backoff,
		remember: cfg.Remember, pending: make(map[string]*atomic.Int64, len(cfg.Queues)), stray: map[string]int{}}
	counts, err := cfg.Store.Queues(context.Background(), cfg.Box)
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", cfg.Box, err)
	}
	for _, q := range cfg.Queues {
		o.pending[q] = new(atomic.Int64)
		o.pending[q].Store(int64(counts[q]))
	}
	for q, n := range counts {
		if o.pending[q] == nil && n > 0 {
			o.stray[q] = n
		}
	}

	f := promauto.With(cfg.Metrics)
	results := f.NewCounterVec(prometheus.CounterOpts{Name: cfg.Names.Results, Help: cfg.Names.ResultsHelp}, []string{"result"})
	o.delivered, o.retried, o.dropped = results.WithLabelValues(cfg.Names.Delivered), results.WithLabelValues("retry"), results.WithLabelValues("dropped")
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: cfg.Names.Pending, Help: cfg.Names.PendingHelp},
		func() float64 { return float64(o.Pending()) })
	return o, nil
}

// Stray returns the queues of the box that New found holding records but
// that the outbox does not serve (say, of a receiver no longer
// configured), with their number of records. They are kept as they are.
func (o *Outbox[R, P]) Stray() map[string]int { return o.stray }

// Results returns the counters of delivered, retried and dropped records.
func (o *Outbox[R, P]) Results() (delivered, retried, dropped prometheus.Counter) {
	return o.delivered, o.retried, o.dropped
}

// Pending reports how many records wait in the served queues.
func (o *Outbox[R, P]) Pending() int {
	var n int64
	for _, p := range o.pending {
		n += p.Load()
	}
	return int(n)
}

// Add queues each of recs in each of queues, in one transaction, except
// where the queue remembers the record's ID (pending, or delivered or
// dropped within Remember). A zero Queued becomes now. added[i*len(recs)+j]
// reports whether recs[j] went into queues[i].
func (o *Outbox[R, P]) Add(ctx context.Context, queues []string, recs ...P) ([]bool, error) {
	now := o.now()
	bodies := make([][]byte, len(recs))
	for j, r := range recs {
		it := r.item()
		if it.Queued.IsZero() {
			it.Queued = now
		}
		b, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("outbox %s: record %s: %w", o.box, it.ID, err)
		}
		bodies[j] = b
	}
	adds := make([]Add, 0, len(queues)*len(recs))
	for _, q := range queues {
		if o.pending[q] == nil {
			return nil, fmt.Errorf("outbox %s: queue %q is not served", o.box, q)
		}
		for j, r := range recs {
			adds = append(adds, Add{Queue: q, ID: r.item().ID, Record: bodies[j]})
		}
	}
	if len(adds) == 0 {
		return nil, nil
	}
	added, err := o.st.Append(ctx, o.box, adds)
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", o.box, err)
	}
	for i, ok := range added {
		if ok {
			o.pending[adds[i].Queue].Add(1)
		}
	}
	return added, nil
}

// Head returns the oldest record of queue, nil when it is empty. Records
// that do not decode are dropped on the way (logged and counted).
func (o *Outbox[R, P]) Head(ctx context.Context, queue string) (P, error) {
	recs, err := o.read(ctx, queue, func(P) bool { return true }, 1)
	if len(recs) == 0 {
		return nil, err
	}
	return recs[0], err
}

// Due returns the records of queue whose next attempt is due at now,
// oldest first. Records that do not decode are dropped (logged and
// counted).
func (o *Outbox[R, P]) Due(ctx context.Context, queue string, now time.Time) ([]P, error) {
	return o.read(ctx, queue, func(r P) bool { return !r.item().Next.After(now) }, 0)
}

// read collects up to limit (0: all) records of queue that keep accepts,
// then drops the unreadable ones it met.
func (o *Outbox[R, P]) read(ctx context.Context, queue string, keep func(P) bool, limit int) ([]P, error) {
	var out []P
	var bad []uint64
	err := o.st.Queued(ctx, o.box, queue, func(seq uint64, record []byte) bool {
		r := P(new(R))
		if err := json.Unmarshal(record, r); err != nil {
			bad = append(bad, seq)
			return true
		}
		it := r.item()
		it.queue, it.seq = queue, seq
		if keep(r) {
			out = append(out, r)
		}
		return limit == 0 || len(out) < limit
	})
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", o.box, err)
	}
	bg := context.WithoutCancel(ctx)
	for _, seq := range bad {
		if err := o.remove(bg, queue, seq, ""); err != nil {
			return out, err
		}
		o.log.Error("outbox: record not readable; dropped", slog.String("outbox", o.box), slog.String("queue", queue), slog.Uint64("seq", seq))
		o.dropped.Inc()
	}
	return out, nil
}

// Done removes a delivered record and counts it. Its id is remembered for
// Remember.
func (o *Outbox[R, P]) Done(ctx context.Context, r P) error {
	it := r.item()
	if err := o.remove(ctx, it.queue, it.seq, it.ID); err != nil {
		return err
	}
	o.delivered.Inc()
	return nil
}

// Drop gives a record up: it removes r, logs msg at Error with r's id,
// queued time, attempts, last error and attrs, and counts it. Its id is
// remembered for Remember.
func (o *Outbox[R, P]) Drop(ctx context.Context, r P, msg string, attrs ...slog.Attr) error {
	it := r.item()
	if err := o.remove(ctx, it.queue, it.seq, it.ID); err != nil {
		return err
	}
	o.log.LogAttrs(ctx, slog.LevelError, msg, append([]slog.Attr{slog.String("id", it.ID), slog.Time("queued", it.Queued),
		slog.Int("attempts", it.Attempts), slog.String("last_error", it.LastError)}, attrs...)...)
	o.dropped.Inc()
	return nil
}

// remove acknowledges record seq of queue, remembering id for Remember.
func (o *Outbox[R, P]) remove(ctx context.Context, queue string, seq uint64, id string) error {
	var at time.Time
	if o.remember > 0 {
		at = o.now()
	}
	removed, err := o.st.Ack(ctx, o.box, queue, seq, id, at)
	if err != nil {
		return fmt.Errorf("outbox %s: record %s not removed: %w", o.box, id, err)
	}
	if p := o.pending[queue]; removed && p != nil {
		p.Add(-1)
	}
	return nil
}

// Retry records a failed attempt of r: one more attempt, lastErr, and the
// next attempt after Backoff. It counts the retry and returns the wait;
// err says the new state was not stored (r keeps it in memory).
func (o *Outbox[R, P]) Retry(ctx context.Context, r P, lastErr string) (wait time.Duration, err error) {
	it := r.item()
	it.Attempts++
	it.LastError = lastErr
	wait = o.backoff(it.Attempts)
	it.Next = o.now().Add(wait)
	o.retried.Inc()
	b, err := json.Marshal(r)
	if err == nil {
		err = o.st.Rewrite(ctx, o.box, it.queue, it.seq, b)
	}
	if err != nil {
		return wait, fmt.Errorf("outbox %s: retry of %s not recorded: %w", o.box, it.ID, err)
	}
	return wait, nil
}

// Forget forgets the ids of queue delivered or dropped more than Remember
// before now. Call it now and then (hourly).
func (o *Outbox[R, P]) Forget(ctx context.Context, queue string, now time.Time) error {
	if o.remember <= 0 {
		return nil
	}
	if err := o.st.Forget(ctx, o.box, queue, now.Add(-o.remember)); err != nil {
		return fmt.Errorf("outbox %s: forgetting done ids: %w", o.box, err)
	}
	return nil
}
