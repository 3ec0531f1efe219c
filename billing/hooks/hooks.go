// Package hooks delivers billing's lifecycle events (billing.HookEvent) to
// the operator's systems as signed HTTP POSTs, at least once, from a
// persistent outbox.
package hooks

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/outbox"
)

// maxHookID bounds an event id (a store key and a header value).
const maxHookID = 256

// Options are Hooks' collaborators.
type Options struct {
	Store   outbox.Store          // required: the outbox lives here (box "hook_outbox"); *store.Bolt
	Metrics prometheus.Registerer // required
	Logger  *slog.Logger          // default slog.Default()
	Now     func() time.Time      // default time.Now; every due-time decision uses it
	// Client sends the POSTs. Default: a 10s timeout and no redirects
	// followed (a 3xx is a failed attempt).
	Client *http.Client
	// MaxAge is how long a delivery is retried, counted from its Emit.
	// Past it the delivery is logged at Error, counted and dropped; an
	// event id delivered or dropped within MaxAge is not queued again.
	// Default 72h.
	MaxAge time.Duration
}

// Hooks delivers signed lifecycle events to the operator's systems. Emit
// writes one delivery per matching hook into a persistent outbox (box
// "hook_outbox", a queue per hook URL) and returns; Run's workers, one per
// hook URL, send them. Delivery is at least once, oldest first per URL; a
// new Hooks on the same store resumes what is pending. A failed attempt
// (anything but a 2xx: another status, a timeout, a refused connection) is
// retried after 1s, 2s, 4s … up to 10 min, each ±20 % jitter; the delivery
// waits at the head of its URL's queue meanwhile. After MaxAge it is
// dropped.
//
// Each delivery is a POST whose body is the billing.HookEvent as JSON, with headers
//
//	Content-Type: application/json
//	Tollgate-Event: quota.warning
//	Tollgate-Delivery: <the event id, the same on every retry>
//	Tollgate-Signature: t=1767225600,v1=5257a869e7…
//
// where t is the unix time of the attempt and v1 the hex HMAC-SHA256, keyed
// with the hook's secret, of t, a ".", and the body bytes exactly as
// received. A receiver verifies a delivery before acting on it:
//
//  1. read the raw body (do not re-encode the JSON);
//  2. split Tollgate-Signature on "," into t=… and v1=… (accept any of
//     several v1 values);
//  3. compute hex(HMAC-SHA256(secret, t + "." + body)) and compare it with
//     v1 in constant time (hmac.Equal, crypto.timingSafeEqual, …);
//  4. reject a t more than a few minutes from its own clock (replays);
//  5. deduplicate on Tollgate-Delivery, then answer 2xx quickly.
//
// VerifySignature does steps 2-4 in Go.
type Hooks struct {
	log         *slog.Logger
	ob          *hookOutbox
	now         func() time.Time
	client      *http.Client
	maxAge      time.Duration
	baseBackoff time.Duration // first retry delay: 1s; tests shorten it before Run
	maxBackoff  time.Duration // 10 min
	workers     []*hookWorker

	ok, retry, dropped prometheus.Counter
	rejected           prometheus.Counter
	duration           prometheus.Histogram

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var _ billing.Emitter = (*Hooks)(nil)

// hookWorker is one hook URL: its filter, its outbox queue and the channel
// Emit signals.
type hookWorker struct {
	cfg       billing.HookConfig
	queue     string          // its queue in the outbox
	events    map[string]bool // nil: all
	logURL    string          // URL without password, for logs
	wake      chan struct{}   // buffered 1
	nextPrune time.Time       // worker goroutine only
}

// New validates hooks and opens their outbox. Deliveries left pending
// by a previous process are picked up by Run.
func New(hooks []billing.HookConfig, opts Options) (*Hooks, error) {
	var errs []error
	seen := map[string]bool{}
	for i, c := range hooks {
		errs = append(errs, c.Validate(i))
		if seen[c.URL] {
			errs = append(errs, fmt.Errorf("billing.hooks[%d].url: %q is listed twice", i, c.URL))
		}
		seen[c.URL] = true
	}
	if opts.Store == nil || opts.Metrics == nil {
		errs = append(errs, errors.New("hooks: Options.Store and Metrics are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 72 * time.Hour
	}
	h := &Hooks{log: opts.Logger, now: opts.Now, client: opts.Client, maxAge: opts.MaxAge,
		baseBackoff: time.Second, maxBackoff: 10 * time.Minute}
	var queues []string
	for _, c := range hooks {
		sum := sha256.Sum256([]byte(c.URL))
		w := &hookWorker{cfg: c, queue: hex.EncodeToString(sum[:8]), wake: make(chan struct{}, 1)}
		queues = append(queues, w.queue)
		if len(c.Events) > 0 {
			w.events = make(map[string]bool, len(c.Events))
			for _, t := range c.Events {
				w.events[t] = true
			}
		}
		w.logURL = c.URL
		if u, err := url.Parse(c.URL); err == nil {
			w.logURL = u.Redacted()
		}
		h.workers = append(h.workers, w)
	}
	ob, err := outbox.New[hookDelivery](outbox.Config{Store: opts.Store, Box: hookBox, Queues: queues,
		Metrics: opts.Metrics, Names: hookNames, Logger: opts.Logger, Now: opts.Now, Backoff: h.backoff, Remember: opts.MaxAge})
	if err != nil {
		return nil, fmt.Errorf("hooks: %w", err)
	}
	h.ob = ob
	h.ok, h.retry, h.dropped = ob.Results()
	for q, n := range ob.Stray() {
		h.log.Warn("hook deliveries pending for a URL no longer configured; kept until it is again",
			slog.String("outbox", q), slog.Int("pending", n))
	}

	f := promauto.With(opts.Metrics)
	h.rejected = f.NewCounter(prometheus.CounterOpts{Name: "tollgate_hook_rejections_total",
		Help: "Failed hook attempts the receiver answered with a 4xx other than 408 and 429 (also counted as retry): likely a misconfigured receiver."})
	h.duration = f.NewHistogram(prometheus.HistogramOpts{Name: "tollgate_hook_delivery_duration_seconds",
		Help: "Time of one hook delivery attempt, until the response or the error.", Buckets: prometheus.DefBuckets})
	return h, nil
}

// Emit durably queues e for every hook whose Events match, in one
// transaction, and wakes their workers. It does no network I/O. An id
// already queued, delivered or dropped (within MaxAge) for a hook is not
// queued again for it.
func (h *Hooks) Emit(ctx context.Context, e billing.HookEvent) error {
	if !billing.KnownHookType(e.Type) {
		return fmt.Errorf("hooks: hook event type %q is unknown", e.Type)
	}
	if e.ID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand)
		e.ID = "evt_" + hex.EncodeToString(b[:])
	}
	if err := checkHookID(e.ID); err != nil {
		return err
	}
	var ws []*hookWorker
	var queues []string
	for _, w := range h.workers {
		if w.events == nil || w.events[e.Type] {
			ws, queues = append(ws, w), append(queues, w.queue)
		}
	}
	if len(ws) == 0 {
		return nil
	}
	now := h.now()
	if e.At.IsZero() {
		e.At = now
	}
	e.At = e.At.UTC()
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("hooks: hook event %s: %w", e.ID, err)
	}
	d := &hookDelivery{Item: outbox.Item{ID: e.ID, Queued: now}, Type: e.Type, Org: e.Org, Body: body}
	added, err := h.ob.Add(ctx, queues, d)
	if err != nil {
		return fmt.Errorf("hooks: queue hook event %s: %w", e.ID, err)
	}
	for i, w := range ws {
		if added[i] {
			select {
			case w.wake <- struct{}{}:
			default: // already signalled
			}
		}
	}
	return nil
}

func checkHookID(id string) error {
	if len(id) > maxHookID {
		return fmt.Errorf("hooks: hook event id is longer than %d bytes", maxHookID)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("hooks: hook event id %q has a control character", id)
		}
	}
	return nil
}

// Pending reports how many deliveries wait in the outbox (all hooks).
func (h *Hooks) Pending() int { return h.ob.Pending() }

// Run delivers until ctx ends or Close is called, and returns when its
// workers have stopped. Call it once; later calls return at once.
func (h *Hooks) Run(ctx context.Context) {
	h.mu.Lock()
	if h.started || h.closed {
		h.mu.Unlock()
		return
	}
	h.started = true
	ctx, cancel := context.WithCancel(ctx)
	h.cancel = cancel
	for _, w := range h.workers {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.work(ctx, w)
		}()
	}
	h.mu.Unlock()
	<-ctx.Done()
	h.wg.Wait()
}

// Close stops Run's workers (an attempt in flight is abandoned and stays
// queued) and waits for them. It is safe before Run, on a nil *Hooks and
// more than once. It does not close the store.
func (h *Hooks) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	h.closed = true
	if h.cancel != nil {
		h.cancel()
	}
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

// Start runs Run in the background until Stop. It does not block; ctx only
// lends its values to the deliveries, its end does not stop them.
func (h *Hooks) Start(ctx context.Context) error {
	go h.Run(context.WithoutCancel(ctx))
	return nil
}

// Stop is Close, waiting for the workers only until ctx ends. The outbox
// keeps what was not delivered.
func (h *Hooks) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		_ = h.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hooks: workers still running: %w", ctx.Err())
	}
}
