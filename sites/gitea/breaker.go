package gitea

// The circuit breaker in front of one Gitea (one base URL).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrDown is returned without asking Gitea while its circuit breaker is
// open: a call to Gitea failed (timeout, refused connection, 502, 503 or
// 504) and Gitea has not answered since. It wraps ErrUpstream; the proxy
// answers 503 with Retry-After: BreakerRetry rounded up to seconds.
var ErrDown = fmt.Errorf("%w: circuit breaker open", ErrUpstream)

// BreakerRetry is how long the breaker stays open after a failure before it
// sends one probe (half-open): GET /api/healthz, in the background, bounded
// by gitea_timeout. An answer closes it; a failure opens it for as long
// again.
const BreakerRetry = time.Second

// breakerProbePath is what the half-open breaker asks Gitea: cheap, no
// token needed, and 503 while Gitea's database is down.
const breakerProbePath = "/api/healthz"

// BreakerState is the state of a Gitea circuit breaker, as exported in
// tollgate_gitea_breaker_state.
type BreakerState int32

const (
	// BreakerClosed: calls go to Gitea.
	BreakerClosed BreakerState = iota
	// BreakerHalfOpen: the probe is on its way to Gitea; calls fail fast
	// with ErrDown until it answers.
	BreakerHalfOpen
	// BreakerOpen: calls fail fast with ErrDown; the next probe goes
	// out BreakerRetry after the last failure.
	BreakerOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return fmt.Sprintf("BreakerState(%d)", int32(s))
}

// BreakerStats is what the breaker has seen since start, for metrics.
type BreakerStats struct {
	State BreakerState
	// Trips counts the changes from closed to open.
	Trips int64
	// Rejected counts the calls failed fast with ErrDown.
	Rejected int64
}

// outcome is how a call to Gitea ended.
type outcome int

const (
	callOK      outcome = iota // Gitea answered
	callFailed                 // timeout, connection failure, 502/503/504
	callUnknown                // the caller gave up first: says nothing about Gitea
)

// breaker is a circuit breaker with one failure to open and one answer to
// close. While it is open no visitor's call goes to Gitea, not even as the
// probe: one background probe every retry tells when Gitea is back. A
// closed breaker costs one atomic load per call. It is safe for concurrent
// use.
type breaker struct {
	retry time.Duration
	probe func() outcome // one call to Gitea, bounded by gitea_timeout

	state atomic.Int32 // BreakerState; written under mu
	mu    sync.Mutex

	trips, rejected atomic.Int64
}

func newBreaker(retry time.Duration, probe func() outcome) *breaker {
	return &breaker{retry: retry, probe: probe}
}

// allow returns ErrDown unless the breaker is closed.
func (b *breaker) allow() error {
	if BreakerState(b.state.Load()) == BreakerClosed {
		return nil
	}
	b.rejected.Add(1)
	return ErrDown
}

// done records how an allowed call ended: an answer closes the breaker, a
// failure while closed opens it and starts the probes.
func (b *breaker) done(o outcome) {
	st := BreakerState(b.state.Load())
	if o == callUnknown || o == callOK && st == BreakerClosed || o == callFailed && st != BreakerClosed {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st = BreakerState(b.state.Load())
	switch {
	case o == callOK:
		b.state.Store(int32(BreakerClosed)) // the probe loop sees it and ends
	case st == BreakerClosed:
		b.trips.Add(1)
		b.state.Store(int32(BreakerOpen))
		go b.probeLoop()
	}
}

// probeLoop probes Gitea every retry until the breaker is closed (by a probe
// or by any call that got an answer). One runs per opening.
func (b *breaker) probeLoop() {
	for {
		time.Sleep(b.retry) // the breaker's pace, not synchronization
		b.mu.Lock()
		if BreakerState(b.state.Load()) == BreakerClosed {
			b.mu.Unlock()
			return
		}
		b.state.Store(int32(BreakerHalfOpen))
		b.mu.Unlock()
		o := b.probe()
		b.mu.Lock()
		st := BreakerState(b.state.Load())
		switch {
		case st == BreakerClosed:
		case o == callOK:
			b.state.Store(int32(BreakerClosed))
		default:
			b.state.Store(int32(BreakerOpen))
		}
		closed := BreakerState(b.state.Load()) == BreakerClosed
		b.mu.Unlock()
		if closed {
			return
		}
	}
}

func (b *breaker) stats() BreakerStats {
	return BreakerStats{State: BreakerState(b.state.Load()), Trips: b.trips.Load(), Rejected: b.rejected.Load()}
}

// classify tells a call's outcome from its answer.
func classify(r *http.Request, resp *http.Response, err error) outcome {
	switch {
	case err != nil && errors.Is(r.Context().Err(), context.Canceled):
		return callUnknown
	case err != nil:
		return callFailed
	case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable ||
		resp.StatusCode == http.StatusGatewayTimeout:
		// What a proxy in front of Gitea answers while Gitea is down.
		return callFailed
	}
	return callOK
}

// giteaTransport sends the calls to one Gitea through its breaker and counts
// those that went out.
type giteaTransport struct {
	rt    http.RoundTripper
	b     *breaker
	calls *atomic.Int64
}

func (t giteaTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.b.allow(); err != nil {
		if r.Body != nil {
			r.Body.Close() // a RoundTripper always closes the body
		}
		return nil, err
	}
	t.calls.Add(1)
	resp, err := t.rt.RoundTrip(r)
	t.b.done(classify(r, resp, err))
	return resp, err
}

// probeGitea is the breaker's probe: GET /api/healthz past the breaker.
func (g *Source) probeGitea(rt http.RoundTripper) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.GiteaTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+breakerProbePath, nil)
	if err != nil {
		return callFailed
	}
	g.Calls.Add(1)
	resp, err := rt.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	if o := classify(req, resp, err); o != callOK {
		return callFailed
	}
	return callOK
}

// Breaker returns the state and counters of the circuit breaker in front of
// this Gitea.
func (g *Source) Breaker() BreakerStats { return g.breaker.stats() }

// upstreamError is err of a failed Gitea call as ErrUpstream, or as
// ErrDown when the breaker refused it.
func upstreamError(err error) error {
	if errors.Is(err, ErrDown) {
		return ErrDown
	}
	return fmt.Errorf("%w: %v", ErrUpstream, err)
}
