package billing

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/tollgate-edge/tollgate/store"
	bolt "go.etcd.io/bbolt"
)

// HookConfig is one [[billing.hooks]] entry.
type HookConfig struct {
	// URL is the http(s) URL that receives a POST per event. Each URL has
	// its own delivery worker and queue; a URL may be listed once.
	URL string `toml:"url"`
	// Secret is the HMAC-SHA256 key of Tollgate-Signature, at least 16
	// characters (already resolved from env:/file: by the caller). Required.
	Secret string `toml:"secret"`
	// Events lists the event types sent to URL (see HookTypes). Empty: all.
	Events []string `toml:"events"`
}

// minHookSecret is the shortest secret a hook accepts.
const minHookSecret = 16

// Validate names every bad key of the i-th [[billing.hooks]] entry. It does
// no I/O.
func (c HookConfig) Validate(i int) error {
	var errs []error
	key := func(k string) string { return fmt.Sprintf("billing.hooks[%d].%s", i, k) }
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("%s: %q must be an http:// or https:// URL with a host", key("url"), c.URL))
	}
	if len(c.Secret) < minHookSecret {
		errs = append(errs, fmt.Errorf("%s: must be at least %d characters (has %d)", key("secret"), minHookSecret, len(c.Secret)))
	}
	for _, t := range c.Events {
		if !hookTypeSet[t] {
			errs = append(errs, fmt.Errorf("%s: unknown event type %q (known: %s)", key("events"), t, strings.Join(HookTypes, ", ")))
		}
	}
	return errors.Join(errs...)
}

// HookTypes lists every event type, for [[billing.hooks]] events and docs.
var HookTypes = []string{
	"quota.warning", "quota.exceeded", "org.throttled", "org.blocked",
	"grace.started", "grace.ending", "org.expired",
	"payment.succeeded", "payment.failed", "org.restored",
}

// hookTypeSet is HookTypes as a set (built once: changing HookTypes later
// does not change what is valid).
var hookTypeSet = func() map[string]bool {
	m := make(map[string]bool, len(HookTypes))
	for _, t := range HookTypes {
		m[t] = true
	}
	return m
}()

// HookEvent is one lifecycle event, the JSON body of a delivery. See Hooks
// for the headers and how a receiver checks them.
type HookEvent struct {
	// ID is unique and stable across retries: receivers deduplicate on it.
	// A caller may set it to make an emit idempotent (e.g.
	// "quota.warning:acme:2026-11:egress"); if empty, Emit makes a random
	// "evt_<hex>". At most 256 bytes, no control characters.
	ID   string         `json:"id"`
	Type string         `json:"type"` // one of HookTypes
	Org  string         `json:"org"`
	At   time.Time      `json:"created_at"` // default: Emit's clock
	Data map[string]any `json:"data,omitempty"`
}

// maxHookID bounds an event id (a bbolt key and a header value).
const maxHookID = 256

// HookOptions are Hooks' collaborators.
type HookOptions struct {
	Store   *store.Bolt           // required: the outbox lives here (bucket "hook_outbox")
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
// writes one delivery per matching hook into a persistent outbox (bbolt
// bucket "hook_outbox") and returns; Run's workers, one per hook URL, send
// them. Delivery is at least once, oldest first per URL; a new Hooks on the
// same store resumes what is pending. A failed attempt (anything but a 2xx:
// another status, a timeout, a refused connection) is retried after 1s, 2s,
// 4s … up to 10 min, each ±20 % jitter; the delivery waits at the head of
// its URL's queue meanwhile. After MaxAge it is dropped.
//
// Each delivery is a POST whose body is the HookEvent as JSON, with headers
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
// VerifyHookSignature does steps 2-4 in Go.
type Hooks struct {
	log         *slog.Logger
	st          *store.Bolt
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

var _ Emitter = (*Hooks)(nil)

// hookWorker is one hook URL: its filter, its outbox bucket and the channel
// Emit signals.
type hookWorker struct {
	cfg       HookConfig
	key       []byte          // sub-bucket of hook_outbox
	events    map[string]bool // nil: all
	logURL    string          // URL without password, for logs
	wake      chan struct{}   // buffered 1
	pending   atomic.Int64
	nextPrune time.Time // worker goroutine only
}

// The outbox: bucket hook_outbox holds a sub-bucket per hook URL (named by
// a hash of the URL), with two sub-buckets:
//
//	queue: 8-byte big-endian sequence → hookDelivery JSON (oldest first)
//	ids:   event id → 'p' + sequence (pending) or 'd' + unix nanos (done:
//	       delivered or dropped; pruned after MaxAge)
const bucketHookOutbox = "hook_outbox"

var (
	hookQueue = []byte("queue")
	hookIDs   = []byte("ids")
)

const (
	hookPruneEvery = time.Hour       // how often done ids are pruned
	hookStoreRetry = 5 * time.Second // wait after a failed outbox read or write
)

// hookDelivery is an outbox record.
type hookDelivery struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Org       string          `json:"org"`
	Body      json.RawMessage `json:"body"` // the POST body, identical on every attempt
	Queued    time.Time       `json:"queued"`
	Attempts  int             `json:"attempts,omitempty"`
	Next      time.Time       `json:"next,omitzero"` // next attempt due (zero: now)
	LastError string          `json:"last_error,omitempty"`
}

// NewHooks validates hooks and opens their outbox. Deliveries left pending
// by a previous process are picked up by Run.
func NewHooks(hooks []HookConfig, opts HookOptions) (*Hooks, error) {
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
		errs = append(errs, errors.New("billing: HookOptions.Store and Metrics are required"))
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
	h := &Hooks{log: opts.Logger, st: opts.Store, now: opts.Now, client: opts.Client, maxAge: opts.MaxAge,
		baseBackoff: time.Second, maxBackoff: 10 * time.Minute}
	for _, c := range hooks {
		sum := sha256.Sum256([]byte(c.URL))
		w := &hookWorker{cfg: c, key: []byte(hex.EncodeToString(sum[:8])), wake: make(chan struct{}, 1)}
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
	if err := h.open(context.Background()); err != nil {
		return nil, err
	}

	f := promauto.With(opts.Metrics)
	deliveries := f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_hook_deliveries_total",
		Help: "Hook delivery attempts by result: ok (2xx), retry (failed, will be retried), dropped (older than max age)."},
		[]string{"result"})
	h.ok, h.retry, h.dropped = deliveries.WithLabelValues("ok"), deliveries.WithLabelValues("retry"), deliveries.WithLabelValues("dropped")
	h.rejected = f.NewCounter(prometheus.CounterOpts{Name: "tollgate_hook_rejections_total",
		Help: "Failed hook attempts the receiver answered with a 4xx other than 408 and 429 (also counted as retry): likely a misconfigured receiver."})
	h.duration = f.NewHistogram(prometheus.HistogramOpts{Name: "tollgate_hook_delivery_duration_seconds",
		Help: "Time of one hook delivery attempt, until the response or the error.", Buckets: prometheus.DefBuckets})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_hook_outbox_pending",
		Help: "Hook deliveries waiting in the outbox."}, func() float64 { return float64(h.Pending()) })
	return h, nil
}

// open creates the buckets of every hook, counts what is pending and warns
// about deliveries left for URLs no longer configured.
func (h *Hooks) open(ctx context.Context) error {
	mine := map[string]bool{}
	err := h.st.Update(ctx, func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists([]byte(bucketHookOutbox))
		if err != nil {
			return err
		}
		for _, w := range h.workers {
			mine[string(w.key)] = true
			hb, err := root.CreateBucketIfNotExists(w.key)
			if err != nil {
				return err
			}
			q, err := hb.CreateBucketIfNotExists(hookQueue)
			if err != nil {
				return err
			}
			if _, err := hb.CreateBucketIfNotExists(hookIDs); err != nil {
				return err
			}
			w.pending.Store(int64(q.Stats().KeyN))
		}
		return root.ForEachBucket(func(k []byte) error {
			if q := root.Bucket(k).Bucket(hookQueue); !mine[string(k)] && q != nil {
				if n := q.Stats().KeyN; n > 0 {
					h.log.Warn("hook deliveries pending for a URL no longer configured; kept until it is again",
						slog.String("outbox", string(k)), slog.Int("pending", n))
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("billing: hook outbox: %w", err)
	}
	return nil
}

// Emit durably queues e for every hook whose Events match, in one
// transaction, and wakes their workers. It does no network I/O. An id
// already queued, delivered or dropped (within MaxAge) for a hook is not
// queued again for it.
func (h *Hooks) Emit(ctx context.Context, e HookEvent) error {
	if !hookTypeSet[e.Type] {
		return fmt.Errorf("billing: hook event type %q is unknown", e.Type)
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
	for _, w := range h.workers {
		if w.events == nil || w.events[e.Type] {
			ws = append(ws, w)
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
		return fmt.Errorf("billing: hook event %s: %w", e.ID, err)
	}
	rec, err := json.Marshal(hookDelivery{ID: e.ID, Type: e.Type, Org: e.Org, Body: body, Queued: now})
	if err != nil {
		return fmt.Errorf("billing: hook event %s: %w", e.ID, err)
	}
	added := make([]bool, len(ws))
	err = h.st.Update(ctx, func(tx *bolt.Tx) error {
		for i, w := range ws {
			q, ids, err := hookBuckets(tx, w)
			if err != nil {
				return err
			}
			if ids.Get([]byte(e.ID)) != nil {
				added[i] = false
				continue
			}
			seq, err := q.NextSequence()
			if err != nil {
				return err
			}
			if err := q.Put(seqKey(seq), rec); err != nil {
				return err
			}
			if err := ids.Put([]byte(e.ID), idMark('p', seq)); err != nil {
				return err
			}
			added[i] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("billing: queue hook event %s: %w", e.ID, err)
	}
	for i, w := range ws {
		if added[i] {
			w.pending.Add(1)
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
		return fmt.Errorf("billing: hook event id is longer than %d bytes", maxHookID)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("billing: hook event id %q has a control character", id)
		}
	}
	return nil
}

// Pending reports how many deliveries wait in the outbox (all hooks).
func (h *Hooks) Pending() int {
	var n int64
	for _, w := range h.workers {
		n += w.pending.Load()
	}
	return int(n)
}

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

// work is one hook's delivery loop: it sleeps until the head of the queue
// is due, an Emit signals, or ctx ends.
func (h *Hooks) work(ctx context.Context, w *hookWorker) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := h.step(ctx, w)
		if ctx.Err() != nil {
			return
		}
		if wait <= 0 {
			continue // progress was made: look at the next delivery
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// step handles the head of w's queue and returns how long to wait before
// the next step (0: at once, after progress).
func (h *Hooks) step(ctx context.Context, w *hookWorker) time.Duration {
	// Bookkeeping writes outlive ctx: a 2xx received while closing is
	// still recorded.
	bg := context.WithoutCancel(ctx)
	now := h.now()
	if !now.Before(w.nextPrune) {
		if err := h.prune(bg, w, now); err != nil {
			h.log.Error("hook outbox: pruning delivered ids failed", slog.String("url", w.logURL), slog.Any("err", err))
		}
		w.nextPrune = now.Add(hookPruneEvery)
	}
	seq, d, err := h.head(ctx, w)
	switch {
	case err != nil && ctx.Err() == nil:
		h.log.Error("hook outbox not readable", slog.String("url", w.logURL), slog.Any("err", err))
		return hookStoreRetry
	case err != nil:
		return 0
	case seq == 0:
		return w.nextPrune.Sub(now) // idle until an Emit
	case d == nil:
		h.drop(bg, w, seq, &hookDelivery{}, "outbox record not readable")
		return 0
	case now.Sub(d.Queued) > h.maxAge:
		h.drop(bg, w, seq, d, "older than max age")
		return 0
	case d.Next.After(now):
		return d.Next.Sub(now)
	}

	status, err := h.send(ctx, w, d)
	if err == nil && status >= 200 && status < 300 {
		if err := h.finish(bg, w, seq, d.ID); err != nil {
			h.log.Error("hook delivered but not removed from the outbox; it will be sent again",
				slog.String("url", w.logURL), slog.String("id", d.ID), slog.Any("err", err))
			return hookStoreRetry
		}
		h.ok.Inc()
		return 0
	}
	if ctx.Err() != nil {
		return 0 // closing: the attempt does not count, the delivery stays as it was
	}
	d.Attempts++
	if err != nil {
		d.LastError = err.Error()
	} else {
		d.LastError = "HTTP " + strconv.Itoa(status)
	}
	wait := h.backoff(d.Attempts)
	d.Next = h.now().Add(wait)
	h.retry.Inc()
	if status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests {
		h.rejected.Inc()
	}
	h.log.Warn("hook delivery failed; will retry", slog.String("url", w.logURL), slog.String("id", d.ID),
		slog.String("type", d.Type), slog.Int("attempt", d.Attempts), slog.Duration("retry_in", wait), slog.String("err", d.LastError))
	rec, err := json.Marshal(d)
	if err == nil {
		err = h.st.Update(bg, func(tx *bolt.Tx) error {
			q, _, err := hookBuckets(tx, w)
			if err != nil {
				return err
			}
			return q.Put(seqKey(seq), rec)
		})
	}
	if err != nil {
		h.log.Error("hook outbox: retry not recorded", slog.String("url", w.logURL), slog.String("id", d.ID), slog.Any("err", err))
	}
	return wait
}

// head returns the oldest queued delivery of w: seq 0 when the queue is
// empty, d nil when its record does not decode.
func (h *Hooks) head(ctx context.Context, w *hookWorker) (uint64, *hookDelivery, error) {
	var seq uint64
	var d *hookDelivery
	err := h.st.View(ctx, func(tx *bolt.Tx) error {
		q, _, err := hookBuckets(tx, w)
		if err != nil {
			return err
		}
		k, v := q.Cursor().First()
		if k == nil {
			return nil
		}
		seq = binary.BigEndian.Uint64(k)
		var rec hookDelivery
		if json.Unmarshal(v, &rec) == nil {
			d = &rec
		}
		return nil
	})
	return seq, d, err
}

// send makes one attempt. status is 0 when err is set.
func (h *Hooks) send(ctx context.Context, w *hookWorker, d *hookDelivery) (int, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(d.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tollgate-hooks")
	req.Header.Set("Tollgate-Event", d.Type)
	req.Header.Set("Tollgate-Delivery", d.ID)
	req.Header.Set("Tollgate-Signature", signHook(w.cfg.Secret, h.now().Unix(), d.Body))
	resp, err := h.client.Do(req)
	if err != nil {
		h.duration.Observe(time.Since(start).Seconds())
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	_ = resp.Body.Close()
	h.duration.Observe(time.Since(start).Seconds())
	return resp.StatusCode, nil
}

// finish removes a delivered record and marks its id done.
func (h *Hooks) finish(ctx context.Context, w *hookWorker, seq uint64, id string) error {
	err := h.st.Update(ctx, func(tx *bolt.Tx) error {
		q, ids, err := hookBuckets(tx, w)
		if err != nil {
			return err
		}
		if err := q.Delete(seqKey(seq)); err != nil {
			return err
		}
		if id == "" {
			return nil
		}
		return ids.Put([]byte(id), idMark('d', uint64(h.now().UnixNano())))
	})
	if err == nil {
		w.pending.Add(-1)
	}
	return err
}

// drop gives a delivery up.
func (h *Hooks) drop(ctx context.Context, w *hookWorker, seq uint64, d *hookDelivery, why string) {
	if err := h.finish(ctx, w, seq, d.ID); err != nil {
		h.log.Error("hook outbox: dropping a delivery failed", slog.String("url", w.logURL), slog.Any("err", err))
		return
	}
	h.log.Error("hook delivery dropped: "+why, slog.String("url", w.logURL), slog.String("id", d.ID),
		slog.String("type", d.Type), slog.String("org", d.Org), slog.Time("queued", d.Queued),
		slog.Int("attempts", d.Attempts), slog.String("last_error", d.LastError))
	h.dropped.Inc()
}

// prune forgets ids done more than MaxAge ago.
func (h *Hooks) prune(ctx context.Context, w *hookWorker, now time.Time) error {
	cutoff := uint64(now.Add(-h.maxAge).UnixNano())
	return h.st.Update(ctx, func(tx *bolt.Tx) error {
		_, ids, err := hookBuckets(tx, w)
		if err != nil {
			return err
		}
		var old [][]byte
		c := ids.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 9 && v[0] == 'd' && binary.BigEndian.Uint64(v[1:]) < cutoff {
				old = append(old, bytes.Clone(k))
			}
		}
		for _, k := range old {
			if err := ids.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// backoff is the wait after the n-th failed attempt: base·2ⁿ⁻¹ capped at
// maxBackoff, then ±20 % jitter.
func (h *Hooks) backoff(n int) time.Duration {
	d := h.baseBackoff
	for i := 1; i < n && d < h.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, h.maxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}

func hookBuckets(tx *bolt.Tx, w *hookWorker) (queue, ids *bolt.Bucket, err error) {
	if root := tx.Bucket([]byte(bucketHookOutbox)); root != nil {
		if hb := root.Bucket(w.key); hb != nil {
			queue, ids = hb.Bucket(hookQueue), hb.Bucket(hookIDs)
		}
	}
	if queue == nil || ids == nil {
		return nil, nil, fmt.Errorf("bucket %s/%s missing", bucketHookOutbox, w.key)
	}
	return queue, ids, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func idMark(kind byte, n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{kind}, n) }

// signHook returns the Tollgate-Signature header value.
func signHook(secret string, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(hookMAC(secret, ts, body))
}

func hookMAC(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// ErrHookSignature is returned by VerifyHookSignature for a delivery that
// must not be trusted.
var ErrHookSignature = errors.New("hook signature not valid")

// defaultHookTolerance is VerifyHookSignature's tolerance when given none.
const defaultHookTolerance = 5 * time.Minute

// VerifyHookSignature checks a Tollgate-Signature header against the raw
// body: one of its v1 values must be the HMAC-SHA256 of "<t>.<body>" with
// secret, and t must be within tolerance of now (either side; 0 means 5
// minutes). Errors wrap ErrHookSignature.
func VerifyHookSignature(secret string, header string, body []byte, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = defaultHookTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: no timestamp", ErrHookSignature)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: no v1 signature", ErrHookSignature)
	}
	if age := now.Sub(time.Unix(t, 0)); age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: timestamp %s is outside the tolerance of %s", ErrHookSignature, time.Unix(t, 0).UTC().Format(time.RFC3339), tolerance)
	}
	want := hookMAC(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: signature does not match", ErrHookSignature)
}
