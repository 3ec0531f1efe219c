package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/store"
)

const hookSecret = "0123456789abcdef-test-secret"

// hookHit is one request a receiver got.
type hookHit struct {
	at     time.Time
	header http.Header
	body   []byte
	status int
}

// hookReceiver records deliveries and answers status(n) to the n-th
// request (1-based); nil status answers 200.
type hookReceiver struct {
	status func(n int) int
	mu     sync.Mutex
	hits   []hookHit
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	code := http.StatusOK
	if r.status != nil {
		code = r.status(len(r.hits) + 1)
	}
	r.hits = append(r.hits, hookHit{at: time.Now(), header: req.Header.Clone(), body: body, status: code})
	r.mu.Unlock()
	w.WriteHeader(code)
}

func (r *hookReceiver) all() []hookHit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookHit(nil), r.hits...)
}

// delivered returns the hits answered 2xx.
func (r *hookReceiver) delivered() []hookHit {
	var out []hookHit
	for _, h := range r.all() {
		if h.status/100 == 2 {
			out = append(out, h)
		}
	}
	return out
}

// newHookReceiver starts a loopback receiver, closed when the test ends.
func newHookReceiver(t *testing.T, status func(n int) int) (*hookReceiver, string) {
	t.Helper()
	r := &hookReceiver{status: status}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv.URL
}

// newTestHooks builds Hooks on st with a fresh registry and a 5ms base
// backoff; Close runs when the test ends (before st closes).
func newTestHooks(t *testing.T, st *store.Bolt, cfgs []billing.HookConfig, opts Options) (*Hooks, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Store, opts.Metrics = st, reg
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	h, err := New(cfgs, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.baseBackoff = 5 * time.Millisecond
	t.Cleanup(func() { _ = h.Close() })
	return h, reg
}

// runHooks starts h.Run; the returned channel closes when Run returns.
func runHooks(t *testing.T, h *Hooks) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return done
}

// hookWaitFor polls cond until it holds or a deadline passes.
func hookWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// hookGauge reads an unlabelled gauge from reg.
func hookGauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// hookLog is a concurrency-safe log sink.
type hookLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *hookLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *hookLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestHookDelivered(t *testing.T) {
	rcv, url := newHookReceiver(t, nil)
	h, reg := newTestHooks(t, storetest.Open(t), []billing.HookConfig{{URL: url, Secret: hookSecret}}, Options{})
	runHooks(t, h)

	at := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	if err := h.Emit(context.Background(), billing.HookEvent{Type: "quota.warning", Org: "acme", At: at,
		Data: map[string]any{"quota": "egress", "used": 80}}); err != nil {
		t.Fatal(err)
	}
	hookWaitFor(t, "the delivery", func() bool { return testutil.ToFloat64(h.ok) == 1 })

	hits := rcv.all()
	if len(hits) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(hits))
	}
	hit := hits[0]
	var got billing.HookEvent
	if err := json.Unmarshal(hit.body, &got); err != nil {
		t.Fatalf("body %s: %v", hit.body, err)
	}
	if !strings.HasPrefix(got.ID, "evt_") || got.Type != "quota.warning" || got.Org != "acme" || !got.At.Equal(at) || got.Data["quota"] != "egress" {
		t.Errorf("body = %s", hit.body)
	}
	for k, want := range map[string]string{
		"Content-Type":      "application/json",
		"Tollgate-Event":    "quota.warning",
		"Tollgate-Delivery": got.ID,
	} {
		if v := hit.header.Get(k); v != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	sig := hit.header.Get("Tollgate-Signature")
	now := time.Now()
	if err := VerifySignature(hookSecret, sig, hit.body, 5*time.Minute, now); err != nil {
		t.Fatalf("VerifySignature(%q): %v", sig, err)
	}
	if h.Pending() != 0 || hookGauge(t, reg, "tollgate_hook_outbox_pending") != 0 {
		t.Errorf("pending = %d after delivery", h.Pending())
	}
	if n := testutil.CollectAndCount(h.duration); n != 1 {
		t.Errorf("duration histogram has %d series", n)
	}

	ts := strings.TrimPrefix(strings.Split(sig, ",")[0], "t=")
	sec, _ := strconv.ParseInt(ts, 10, 64)
	for _, tc := range []struct {
		name, secret, header string
		body                 []byte
		now                  time.Time
	}{
		{"wrong secret", "another-secret-of-16+", sig, hit.body, now},
		{"modified body", hookSecret, sig, bytes.Replace(hit.body, []byte("acme"), []byte("acmf"), 1), now},
		{"old timestamp", hookSecret, sig, hit.body, time.Unix(sec, 0).Add(6 * time.Minute)},
		{"future timestamp", hookSecret, sig, hit.body, time.Unix(sec, 0).Add(-6 * time.Minute)},
		{"no header", hookSecret, "", hit.body, now},
		{"no v1", hookSecret, "t=" + ts, hit.body, now},
		{"bad t", hookSecret, strings.Replace(sig, "t="+ts, "t=x", 1), hit.body, now},
		{"other timestamp", hookSecret, strings.Replace(sig, "t="+ts, "t="+strconv.FormatInt(sec-1, 10), 1), hit.body, now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifySignature(tc.secret, tc.header, tc.body, 5*time.Minute, tc.now); !errors.Is(err, ErrSignature) {
				t.Errorf("err = %v, want ErrSignature", err)
			}
		})
	}
	t.Run("rotated secret", func(t *testing.T) {
		both := sig + ",v1=" + strings.Repeat("ab", 32)
		if err := VerifySignature(hookSecret, both, hit.body, 0, now); err != nil {
			t.Errorf("a second v1 broke verification: %v", err)
		}
	})
}

func TestHookFilterAndIdempotentEmit(t *testing.T) {
	rcvA, urlA := newHookReceiver(t, nil)
	rcvB, urlB := newHookReceiver(t, nil)
	h, reg := newTestHooks(t, storetest.Open(t), []billing.HookConfig{
		{URL: urlA, Secret: hookSecret, Events: []string{"quota.warning"}},
		{URL: urlB, Secret: hookSecret},
	}, Options{})
	ctx := context.Background()

	warn := billing.HookEvent{ID: "quota.warning:acme:2026-11:egress:80", Type: "quota.warning", Org: "acme"}
	for range 2 {
		if err := h.Emit(ctx, warn); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Emit(ctx, billing.HookEvent{Type: "org.expired", Org: "acme"}); err != nil {
		t.Fatal(err)
	}
	// Before Run: A holds the warning once, B the warning and the expiry.
	if p, g := h.Pending(), hookGauge(t, reg, "tollgate_hook_outbox_pending"); p != 3 || g != 3 {
		t.Fatalf("pending = %d, gauge = %v, want 3", p, g)
	}
	for _, bad := range []billing.HookEvent{{Type: "quota.warn"}, {Type: ""}, {Type: "org.expired", ID: "a\nb"}} {
		if err := h.Emit(ctx, bad); err == nil {
			t.Errorf("Emit(%+v) accepted", bad)
		}
	}

	runHooks(t, h)
	hookWaitFor(t, "three deliveries", func() bool { return testutil.ToFloat64(h.ok) == 3 })
	a, b := rcvA.delivered(), rcvB.delivered()
	if len(a) != 1 || a[0].header.Get("Tollgate-Delivery") != warn.ID {
		t.Errorf("A (quota.warning only) got %d deliveries", len(a))
	}
	if len(b) != 2 || b[0].header.Get("Tollgate-Event") != "quota.warning" || b[1].header.Get("Tollgate-Event") != "org.expired" {
		t.Errorf("B (all events) got %d deliveries, want the warning then the expiry", len(b))
	}

	// Delivered ids are remembered: emitting again queues nothing.
	if err := h.Emit(ctx, warn); err != nil {
		t.Fatal(err)
	}
	if p := h.Pending(); p != 0 {
		t.Errorf("re-emitting a delivered id queued %d deliveries", p)
	}
}

func TestHookRetryBackoff(t *testing.T) {
	const failures = 4
	rcv, url := newHookReceiver(t, func(n int) int {
		if n <= failures {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	h, _ := newTestHooks(t, storetest.Open(t), []billing.HookConfig{{URL: url, Secret: hookSecret}}, Options{})
	const base = 20 * time.Millisecond
	h.baseBackoff = base
	runHooks(t, h)
	if err := h.Emit(context.Background(), billing.HookEvent{Type: "payment.failed", Org: "acme"}); err != nil {
		t.Fatal(err)
	}
	hookWaitFor(t, "the delivery after failures", func() bool { return testutil.ToFloat64(h.ok) == 1 })

	hits := rcv.all()
	if len(hits) != failures+1 || len(rcv.delivered()) != 1 {
		t.Fatalf("receiver got %d requests (%d delivered), want %d (1)", len(hits), len(rcv.delivered()), failures+1)
	}
	if r := testutil.ToFloat64(h.retry); r != failures {
		t.Errorf("retry count = %v, want %d", r, failures)
	}
	if r := testutil.ToFloat64(h.rejected); r != 0 {
		t.Errorf("503s counted as rejections: %v", r)
	}
	var gaps []time.Duration
	for i := 1; i < len(hits); i++ {
		if hits[i].header.Get("Tollgate-Delivery") != hits[0].header.Get("Tollgate-Delivery") || !bytes.Equal(hits[i].body, hits[0].body) {
			t.Errorf("attempt %d changed the id or body", i+1)
		}
		gap := hits[i].at.Sub(hits[i-1].at)
		gaps = append(gaps, gap)
		// The n-th retry waits base·2ⁿ⁻¹ −20 % at least (sleeps only run late).
		if least := time.Duration(float64(base<<(i-1)) * 0.8); gap < least-time.Millisecond {
			t.Errorf("gap before attempt %d = %s, want ≥ %s", i+1, gap, least)
		}
	}
	if gaps[len(gaps)-1] <= gaps[0] {
		t.Errorf("backoff does not grow: %v", gaps)
	}
	t.Logf("gaps between attempts: %v", gaps)
}

func TestHookRejectionsCounted(t *testing.T) {
	for _, tc := range []struct {
		status   int
		rejected float64
	}{
		{http.StatusNotFound, 2},
		{http.StatusUnauthorized, 2},
		{http.StatusTooManyRequests, 0},
		{http.StatusRequestTimeout, 0},
		{http.StatusBadGateway, 0},
		{http.StatusFound, 0}, // redirects are not followed
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			rcv, url := newHookReceiver(t, func(n int) int {
				if n <= 2 {
					if tc.status == http.StatusFound {
						return http.StatusFound // no Location: any client following it would fail
					}
					return tc.status
				}
				return http.StatusNoContent
			})
			h, _ := newTestHooks(t, storetest.Open(t), []billing.HookConfig{{URL: url, Secret: hookSecret}}, Options{})
			runHooks(t, h)
			if err := h.Emit(context.Background(), billing.HookEvent{Type: "org.blocked", Org: "acme"}); err != nil {
				t.Fatal(err)
			}
			hookWaitFor(t, "the delivery", func() bool { return testutil.ToFloat64(h.ok) == 1 })
			if got := testutil.ToFloat64(h.rejected); got != tc.rejected {
				t.Errorf("rejections = %v, want %v", got, tc.rejected)
			}
			if got := testutil.ToFloat64(h.retry); got != 2 || len(rcv.all()) != 3 {
				t.Errorf("retries = %v, requests = %d, want 2, 3", got, len(rcv.all()))
			}
		})
	}
}
