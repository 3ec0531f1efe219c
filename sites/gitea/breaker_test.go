package gitea

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// TestBreakerStates walks the breaker through its states with a probe the
// test answers.
func TestBreakerStates(t *testing.T) {
	probes := make(chan outcome)
	asked := make(chan struct{})
	b := newBreaker(5*time.Millisecond, func() outcome {
		asked <- struct{}{}
		return <-probes
	})
	want := func(step string, st BreakerState, trips, rejected int64) {
		t.Helper()
		if got := b.stats(); got != (BreakerStats{State: st, Trips: trips, Rejected: rejected}) {
			t.Fatalf("%s: %+v; want %v, %d trips, %d rejected", step, got, st, trips, rejected)
		}
	}
	if err := b.allow(); err != nil {
		t.Fatalf("closed: %v", err)
	}
	b.done(callUnknown) // the caller gave up: says nothing
	b.done(callOK)
	want("answers and give-ups", BreakerClosed, 0, 0)

	b.done(callFailed)
	want("one failure", BreakerOpen, 1, 0)
	if err := b.allow(); !errors.Is(err, ErrDown) || !errors.Is(err, ErrUpstream) {
		t.Fatalf("open: %v; want ErrDown (an ErrUpstream)", err)
	}
	b.done(callFailed) // a call that began before the trip
	want("a late failure", BreakerOpen, 1, 1)

	<-asked // the probe is out
	want("probing", BreakerHalfOpen, 1, 1)
	if err := b.allow(); !errors.Is(err, ErrDown) {
		t.Fatalf("half-open: %v; want ErrDown (no visitor call is the probe)", err)
	}
	probes <- callFailed
	<-asked // the next probe, one retry later
	probes <- callOK
	waitState(t, b, BreakerClosed)
	want("after a probe answered", BreakerClosed, 1, 2)

	// A call in flight at the trip that gets an answer closes it too.
	b.done(callFailed)
	<-asked
	b.done(callOK)
	want("an answer while probing", BreakerClosed, 2, 2)
	probes <- callFailed // the probe that was out fails: the answer above decides
	if err := b.allow(); err != nil {
		t.Fatalf("closed after an answer: %v", err)
	}
	want("after the late probe", BreakerClosed, 2, 2)
}

func waitState(t *testing.T, b *breaker, st BreakerState) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for BreakerState(b.state.Load()) != st {
		if time.Now().After(deadline) {
			t.Fatalf("breaker %v after 5s; want %v", BreakerState(b.state.Load()), st)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

// hangingGitea answers like a Gitea without repositories (404, healthz 200)
// or, while hang is set, holds every request until the client gives up.
type hangingGitea struct {
	url          string
	hang         atomic.Bool
	calls, probe atomic.Int64
}

func newHangingGitea(t *testing.T) *hangingGitea {
	h := &hangingGitea{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.calls.Add(1)
		if r.URL.Path == breakerProbePath {
			h.probe.Add(1)
		}
		if h.hang.Load() {
			<-r.Context().Done()
			return
		}
		if r.URL.Path == breakerProbePath {
			w.Write([]byte(`{"status":"pass"}`))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

// TestGiteaBreakerSlow: against a Gitea that hangs, the first call waits
// gitea_timeout and fails; every later call fails fast with ErrDown
// and sends nothing, while one background probe per BreakerRetry asks
// /api/healthz; the first answer closes the breaker.
func TestGiteaBreakerSlow(t *testing.T) {
	h := newHangingGitea(t)
	const timeout = 300 * time.Millisecond
	g := newOwnersSource(t, h.url, sites.Config{GiteaTimeout: timeout, NegativeTTL: time.Hour}, Options{})
	h.hang.Store(true)

	start := time.Now()
	_, err := g.Repo("a", "pages", "").Exists()
	first := time.Since(start)
	if !errors.Is(err, ErrUpstream) || errors.Is(err, ErrDown) || first < timeout {
		t.Fatalf("first call: %v after %v; want ErrUpstream after gitea_timeout (%v)", err, first, timeout)
	}
	if st := g.Breaker(); st.State != BreakerOpen || st.Trips != 1 {
		t.Fatalf("after the first timeout: %+v; want open, 1 trip", st)
	}
	sent := h.calls.Load() - h.probe.Load()
	var slowest time.Duration
	for i := range 50 {
		start := time.Now()
		_, err1 := g.Repo("o"+strconv.Itoa(i), "pages", "").Exists()
		_, err2 := g.KnownOwner("u" + strconv.Itoa(i))
		_, err3 := g.Repo("a", "pages", "b"+strconv.Itoa(i)).Get([]byte("/x"))
		slowest = max(slowest, time.Since(start))
		for _, err := range []error{err1, err2, err3} {
			if !errors.Is(err, ErrDown) {
				t.Fatalf("miss %d with the breaker open: %v; want ErrDown", i, err)
			}
		}
	}
	if slowest > 50*time.Millisecond {
		t.Fatalf("slowest of 50 rounds of three misses with the breaker open: %v; want milliseconds", slowest)
	}
	if n := h.calls.Load() - h.probe.Load() - sent; n != 0 {
		t.Fatalf("%d calls reached Gitea with the breaker open; want 0 (only probes)", n)
	}
	t.Logf("first miss %v (gitea_timeout %v); 150 misses after it, slowest round %v", first.Round(time.Millisecond), timeout, slowest)

	h.hang.Store(false)
	back := time.Now()
	waitState(t, g.breaker, BreakerClosed)
	recovered := time.Since(back)
	if recovered > BreakerRetry+timeout+time.Second {
		t.Fatalf("closed %v after Gitea answered again; want within BreakerRetry + gitea_timeout", recovered)
	}
	if ok, err := g.Repo("new", "pages", "").Exists(); ok || err != nil {
		t.Fatalf("after recovery: %v, %v; want false, nil (Gitea answered 404)", ok, err)
	}
	if h.probe.Load() == 0 {
		t.Fatal("no probe reached Gitea")
	}
	t.Logf("closed %v after Gitea answered again; %d probes", recovered.Round(time.Millisecond), h.probe.Load())
}
