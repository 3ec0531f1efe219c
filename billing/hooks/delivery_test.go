package hooks

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
)

func TestHookReceiverDownThenUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // connections are refused until the receiver starts below

	h, _ := newTestHooks(t, storetest.Open(t), []billing.HookConfig{{URL: "http://" + addr + "/hooks", Secret: hookSecret}}, Options{})
	runHooks(t, h)
	for _, typ := range []string{"payment.failed", "grace.started"} {
		if err := h.Emit(context.Background(), billing.HookEvent{Type: typ, Org: "acme"}); err != nil {
			t.Fatal(err)
		}
	}
	hookWaitFor(t, "two refused attempts", func() bool { return testutil.ToFloat64(h.retry) >= 2 })
	if h.Pending() != 2 {
		t.Fatalf("pending = %d while the receiver is down", h.Pending())
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	rcv := &hookReceiver{}
	srv := httptest.NewUnstartedServer(rcv)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	hookWaitFor(t, "both deliveries", func() bool { return h.Pending() == 0 })
	got := rcv.delivered()
	if len(got) != 2 || got[0].header.Get("Tollgate-Event") != "payment.failed" || got[1].header.Get("Tollgate-Event") != "grace.started" {
		t.Fatalf("receiver got %d deliveries, want both in order", len(got))
	}
}

func TestHookSlowReceiverIsolated(t *testing.T) {
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(free) // runs before slow.Close
	fast, fastURL := newHookReceiver(t, nil)

	h, _ := newTestHooks(t, storetest.Open(t), []billing.HookConfig{
		{URL: slow.URL, Secret: hookSecret},
		{URL: fastURL, Secret: hookSecret},
	}, Options{})
	runHooks(t, h)
	ctx := context.Background()
	if err := h.Emit(ctx, billing.HookEvent{Type: "org.throttled", Org: "acme"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow receiver got no request")
	}

	// The slow receiver hangs: Emit still returns at once, and the other
	// hook gets both events.
	done := make(chan error, 1)
	go func() { done <- h.Emit(ctx, billing.HookEvent{Type: "org.blocked", Org: "acme"}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Emit blocked while a receiver hangs")
	}
	hookWaitFor(t, "both events at the fast receiver", func() bool { return testutil.ToFloat64(h.ok) == 2 })
	if n := len(fast.delivered()); n != 2 {
		t.Errorf("fast receiver got %d deliveries, want 2", n)
	}
	if p := h.Pending(); p != 2 {
		t.Errorf("pending = %d, want the slow receiver's 2", p)
	}

	free()
	hookWaitFor(t, "the slow receiver to catch up", func() bool { return h.Pending() == 0 })
}

func TestHookRestart(t *testing.T) {
	var up atomic.Bool
	rcv, url := newHookReceiver(t, func(int) int {
		if up.Load() {
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	})
	st := storetest.Open(t)
	cfg := []billing.HookConfig{{URL: url, Secret: hookSecret}}
	ev := billing.HookEvent{ID: "org.expired:acme:1", Type: "org.expired", Org: "acme"}

	h1, _ := newTestHooks(t, st, cfg, Options{})
	done := runHooks(t, h1)
	if err := h1.Emit(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	hookWaitFor(t, "a failed attempt", func() bool { return testutil.ToFloat64(h1.retry) >= 1 })
	if err := h1.Close(); err != nil {
		t.Fatal(err)
	}
	<-done

	h2, _ := newTestHooks(t, st, cfg, Options{})
	if p := h2.Pending(); p != 1 {
		t.Fatalf("after restart pending = %d, want 1", p)
	}
	seq, d, err := h2.head(context.Background(), h2.workers[0])
	if err != nil || seq == 0 || d == nil {
		t.Fatalf("outbox head: %d, %v, %v", seq, d, err)
	}
	if d.ID != ev.ID || d.Attempts < 1 || d.Next.IsZero() || d.LastError != "HTTP 503" {
		t.Errorf("persisted delivery = %+v, want its attempts and next attempt time", d)
	}

	up.Store(true)
	runHooks(t, h2)
	hookWaitFor(t, "the delivery after restart", func() bool { return testutil.ToFloat64(h2.ok) == 1 })
	// h2 delivered it once. The receiver may also have answered 200 to
	// h1's last attempt, abandoned by Close while in flight but handled
	// after the receiver came up: at least once, never a lost event.
	got := rcv.delivered()
	if len(got) == 0 {
		t.Fatal("the event was not delivered after the restart")
	}
	for _, x := range got {
		if id := x.header.Get("Tollgate-Delivery"); id != ev.ID {
			t.Errorf("delivered %s, want only %s", id, ev.ID)
		}
	}
	if err := h2.Emit(context.Background(), ev); err != nil || h2.Pending() != 0 {
		t.Errorf("re-emit after restart: err %v, pending %d", err, h2.Pending())
	}
}

func TestHookMaxAge(t *testing.T) {
	rcv, url := newHookReceiver(t, func(int) int { return http.StatusServiceUnavailable })
	clock := clocktest.New(time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC))
	logs := &hookLog{}
	h, _ := newTestHooks(t, storetest.Open(t), []billing.HookConfig{{URL: url, Secret: hookSecret}}, Options{
		Now: clock.Now, MaxAge: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	runHooks(t, h)
	ev := billing.HookEvent{ID: "grace.ending:acme:1", Type: "grace.ending", Org: "acme"}
	if err := h.Emit(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	hookWaitFor(t, "a failed attempt", func() bool { return testutil.ToFloat64(h.retry) == 1 })
	// The clock stands still, so the retry is never due; the signature
	// uses the injected clock too.
	hit := rcv.all()[0]
	if err := VerifySignature(hookSecret, hit.header.Get("Tollgate-Signature"), hit.body, time.Second, clock.Now()); err != nil {
		t.Errorf("signature with the injected clock: %v", err)
	}

	clock.Add(time.Hour + time.Minute)
	hookWaitFor(t, "the drop", func() bool { return testutil.ToFloat64(h.dropped) == 1 && h.Pending() == 0 })
	if n := len(rcv.all()); n != 1 {
		t.Errorf("receiver got %d attempts, want 1 (the rest is past max age)", n)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "dropped") || !strings.Contains(l, ev.ID) {
		t.Errorf("no error logged for the drop:\n%s", l)
	}
	if err := h.Emit(context.Background(), ev); err != nil || h.Pending() != 0 {
		t.Errorf("re-emitting a dropped id: err %v, pending %d", err, h.Pending())
	}
}

func TestHookBackoff(t *testing.T) {
	h := &Hooks{baseBackoff: time.Second, maxBackoff: 10 * time.Minute}
	for n := 1; n <= 40; n++ {
		nominal := min(time.Second<<min(n-1, 20), 10*time.Minute)
		for range 50 {
			if d := h.backoff(n); d < nominal*8/10 || d > nominal*12/10 {
				t.Fatalf("backoff(%d) = %s, want %s ±20 %%", n, d, nominal)
			}
		}
	}
}

func TestHookNewAndClose(t *testing.T) {
	st := storetest.Open(t)
	reg := prometheus.NewRegistry()
	good := billing.HookConfig{URL: "http://127.0.0.1:1/hooks", Secret: hookSecret}
	for name, tc := range map[string]struct {
		hooks []billing.HookConfig
		opts  Options
		want  string
	}{
		"no store":    {[]billing.HookConfig{good}, Options{Metrics: reg}, "Store"},
		"no metrics":  {[]billing.HookConfig{good}, Options{Store: st}, "Metrics"},
		"bad config":  {[]billing.HookConfig{good, {URL: "x", Secret: hookSecret}}, Options{Store: st, Metrics: reg}, "billing.hooks[1].url"},
		"url twice":   {[]billing.HookConfig{good, good}, Options{Store: st, Metrics: reg}, "billing.hooks[1].url"},
		"nothing set": {[]billing.HookConfig{good}, Options{}, "required"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(tc.hooks, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error naming %s", err, tc.want)
			}
		})
	}

	var nilHooks *Hooks
	if err := nilHooks.Close(); err != nil {
		t.Errorf("Close on nil: %v", err)
	}
	h, _ := newTestHooks(t, st, []billing.HookConfig{good}, Options{})
	if err := h.Close(); err != nil {
		t.Errorf("Close before Run: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-runHooks(t, h):
	case <-time.After(5 * time.Second):
		t.Fatal("Run after Close did not return")
	}
}
