package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/hooks"
	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/meter"
)

// A part is one long-running piece of a node: the store, the Redis client,
// the meter, a background loop, the listeners. serve starts the parts in
// the order they depend on each other and stops them in reverse.
//
// Start makes the part do its work. It may start goroutines and do the I/O
// the part cannot work without, and should return quickly; ctx bounds
// Start only, not the part's life: a part runs until Stop, whatever
// becomes of ctx. An error means the part is not running.
//
// Stop ends what Start began and releases what the part holds. It must
// return by ctx's deadline, giving up on what is not done by then and
// saying so in its error; without a deadline it finishes. Stop is called
// once, after Start, including a Start that failed or did half its work,
// so it must be safe then; it is not called for a part never started.
// Parts are not restarted.
//
// *meter.Meter, *billing.Billing, *hooks.Hooks and *stripe.Stripe implement
// it; the rest of a node is fitted by resource, loop and serving.
type part interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

var (
	_ part = (*meter.Meter)(nil)
	_ part = (*billing.Billing)(nil)
	_ part = (*hooks.Hooks)(nil)
	_ part = (*stripe.Stripe)(nil)
)

// parts starts a node's parts in order and stops the started ones in
// reverse. It is not safe for concurrent use.
type parts struct {
	log     *slog.Logger
	started []namedPart
}

type namedPart struct {
	name string
	p    part
}

// start starts p and keeps it to be stopped. A part whose Start fails is
// kept too (Stop is safe after a failed Start); the caller then stops all.
func (ps *parts) start(ctx context.Context, name string, p part) error {
	ps.started = append(ps.started, namedPart{name, p})
	if err := p.Start(ctx); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// adopt keeps a resource that its constructor opened, to be released by
// stop in its turn.
func (ps *parts) adopt(name string, release resource) {
	ps.started = append(ps.started, namedPart{name, release})
}

// stop stops every part kept, the last started first, each with ctx. One
// that fails to stop is logged, and the next is stopped all the same.
func (ps *parts) stop(ctx context.Context) {
	for i := len(ps.started) - 1; i >= 0; i-- {
		np := ps.started[i]
		if err := np.p.Stop(ctx); err != nil {
			ps.log.Error("did not stop cleanly", slog.String("part", np.name), slog.Any("err", err))
		}
	}
	ps.started = nil
}

// resource is a part that is open once built (a file, a client, a bound
// socket): Start does nothing, Stop releases it.
type resource func(ctx context.Context) error

func (r resource) Start(context.Context) error    { return nil }
func (r resource) Stop(ctx context.Context) error { return r(ctx) }

// closes is the resource released by close.
func closes(close func() error) resource {
	return func(context.Context) error { return close() }
}

// loop is a part that runs a function from Start until Stop, on a context
// of its own that Stop cancels; Stop then waits for the function to return
// until its ctx ends.
type loop struct {
	run    func(ctx context.Context)
	cancel context.CancelFunc
	done   chan struct{}
}

func (l *loop) Start(ctx context.Context) error {
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		l.run(ctx)
	}()
	return nil
}

func (l *loop) Stop(ctx context.Context) error {
	l.cancel()
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopWithin gives p's Stop a deadline of its own, d from when it begins:
// how long in-flight requests may finish, or the final usage flush may take.
func stopWithin(d time.Duration, p part) part { return bounded{p, d} }

type bounded struct {
	part
	d time.Duration
}

func (b bounded) Stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.d)
	defer cancel()
	return b.part.Stop(ctx)
}
