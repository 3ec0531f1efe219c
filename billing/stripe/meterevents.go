package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/outbox"
	"github.com/tollgate-edge/tollgate/store"
)

// Overage reporting. Each pass (Run's every report_interval, or ReportNow):
//
//  1. For each org with a Stripe customer and an egress quota, for each
//     hour that ended at least report_delay ago and after the org's cursor
//     (bucket stripe_report_cursor; the current period's start the first
//     time), the hour's overage is the part of the period's cumulative
//     egress at the hour's end above both the quota and the cumulative
//     egress at its start: max(0, cumEnd − max(quota, cumStart)). Periods
//     are UTC calendar months, as the meter's. Non-zero overages go into
//     the outbox (box stripe_meter_outbox), then the cursor moves past
//     them. An hour is queued once: should the cursor not move (a failed
//     write, a crash), the next pass queues the same identifiers, which the
//     outbox skips (pending, or sent within meterRemember).
//  2. Due outbox entries are posted as billing meter events, in the order
//     they were queued (so oldest hour first per org); a sent entry is
//     deleted. A failed one stays with its next attempt time
//     (report_interval·2ⁿ⁻¹, at most 1h, ±20 %); a failure that looks like
//     Stripe being unreachable ends the pass.
//
// Each event's identifier is tollgate-<org>-<YYYYMMDDHH> (the hour's start,
// UTC): Stripe deduplicates identifiers over 24 h, so a retry after a lost
// response does not bill twice, and neither do several nodes reporting the
// same hour from shared usage. Its timestamp is the hour's last second.

// maxMeterEventAge is the oldest event Stripe accepts (35 days) with an
// hour of margin; older entries are dropped (and logged) instead of being
// retried for ever.
const maxMeterEventAge = 35*24*time.Hour - time.Hour

// meterEntry is an outbox record; its id is the meter event identifier.
type meterEntry struct {
	outbox.Item
	Org       string `json:"org"`
	Customer  string `json:"customer"`
	Value     int64  `json:"value"`     // overage bytes
	Timestamp int64  `json:"timestamp"` // unix seconds: the hour's last second
}

// meterIdentifier is the meter event identifier of an org's hour.
func meterIdentifier(org string, hour time.Time) string {
	return "tollgate-" + org + "-" + hour.UTC().Format("2006010215")
}

// Run reports overage until ctx ends or Close is called: a pass (ReportNow)
// at once and then every report_interval, and once an hour it forgets
// processed webhook event ids older than 30 days and meter event
// identifiers sent more than meterRemember ago. Call it once; later calls
// return at once.
func (s *Stripe) Run(ctx context.Context) {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return
	}
	s.started = true
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.mu.Unlock()
	defer close(s.done)
	defer cancel()

	tick := time.NewTicker(s.cfg.ReportInterval)
	defer tick.Stop()
	var nextPrune time.Time
	for {
		if now := s.now(); !now.Before(nextPrune) {
			if err := s.pruneEvents(ctx, now); err != nil && ctx.Err() == nil {
				s.log.Error("stripe: forgetting old webhook event ids failed", slog.Any("err", err))
			}
			if err := s.ob.Forget(ctx, meterQueue, now); err != nil && ctx.Err() == nil {
				s.log.Error("stripe: forgetting sent meter event identifiers failed", slog.Any("err", err))
			}
			nextPrune = now.Add(time.Hour)
		}
		if err := s.ReportNow(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("stripe: overage report incomplete; the rest is retried", slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Close stops Run (a send in flight is abandoned and stays pending) and
// waits for it to return. It is safe before Run, on a nil *Stripe and more
// than once. It does not close the store; ServeHTTP keeps working.
func (s *Stripe) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	s.closed = true
	started := s.started
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	if started {
		<-s.done
	}
	return nil
}

// Start runs Run in the background until Stop. It does not block; ctx only
// lends its values to the reports, its end does not stop them. ServeHTTP
// works with or without it.
func (s *Stripe) Start(ctx context.Context) error {
	go s.Run(context.WithoutCancel(ctx))
	return nil
}

// Stop is Close, waiting for Run only until ctx ends. The outbox keeps the
// meter events Stripe has not accepted.
func (s *Stripe) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		_ = s.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stripe: overage report still running: %w", ctx.Err())
	}
}

// Pending reports how many meter events wait in the outbox.
func (s *Stripe) Pending() int { return s.ob.Pending() }

// ReportNow makes one pass: it queues the overage of every due hour, then
// sends the due meter events. The error says what failed (the rest of the
// pass went on, except that sending stops at the first failure that looks
// like Stripe being unreachable); what failed is retried by a later pass.
// It does nothing when reporting is off (no secret_key or no usage reader).
func (s *Stripe) ReportNow(ctx context.Context) error {
	if s.events == nil {
		return nil
	}
	s.passMu.Lock()
	defer s.passMu.Unlock()
	return errors.Join(s.enqueue(ctx), s.flush(ctx))
}

// enqueue queues the overage of every org's due hours.
func (s *Stripe) enqueue(ctx context.Context) error {
	now := s.now().UTC()
	limit := meter.Hour(now.Add(-s.cfg.ReportDelay)) // hours ending by then are due
	first := monthStart(now)
	orgs := s.acc.Orgs()
	slices.Sort(orgs)
	var errs []error
	for _, org := range orgs {
		if ctx.Err() != nil {
			return errors.Join(append(errs, ctx.Err())...)
		}
		quota, customer := s.acc.Quota(org)
		if quota <= 0 || customer == "" {
			continue
		}
		if err := s.enqueueOrg(ctx, org, quota, customer, first, limit); err != nil {
			errs = append(errs, fmt.Errorf("overage of org %s: %w", org, err))
		}
	}
	return errors.Join(errs...)
}

// enqueueOrg queues an org's overage from its cursor (first if none) to
// limit, then moves the cursor to limit.
func (s *Stripe) enqueueOrg(ctx context.Context, org string, quota int64, customer string, first, limit time.Time) error {
	cursor := first
	v, err := s.st.Get(ctx, bucketStripeCursor, org)
	if err == nil && v != nil {
		err = cursor.UnmarshalText(v)
	}
	if err != nil {
		return fmt.Errorf("cursor: %w", err)
	}
	if !cursor.Before(limit) {
		return nil
	}
	var hours []hourOverage
	for from := cursor; from.Before(limit); {
		ps := monthStart(from)
		to := ps.AddDate(0, 1, 0)
		if limit.Before(to) {
			to = limit
		}
		points, err := s.usage.Hourly(ctx, org, ps, to)
		if err != nil {
			return err
		}
		hours = append(hours, overages(points, ps, from, to, quota)...)
		from = to
	}

	now := s.now().UTC()
	recs := make([]*meterEntry, len(hours))
	var total int64
	for i, h := range hours {
		recs[i] = &meterEntry{Item: outbox.Item{ID: meterIdentifier(org, h.start), Queued: now},
			Org: org, Customer: customer, Value: h.bytes, Timestamp: h.start.Add(time.Hour - time.Second).Unix()}
		total += h.bytes
	}
	bg := context.WithoutCancel(ctx)
	added, err := s.ob.Add(bg, []string{meterQueue}, recs...)
	if err != nil {
		return fmt.Errorf("queueing: %w", err)
	}
	end, err := limit.MarshalText()
	if err == nil {
		err = s.st.Apply(bg, store.Put(bucketStripeCursor, org, end))
	}
	if err != nil {
		return fmt.Errorf("cursor: %w", err)
	}
	if n := count(added); n > 0 {
		s.log.Info("stripe: overage queued", slog.String("org", org), slog.Int("hours", n),
			slog.Int64("bytes", total), slog.Time("through", limit))
	}
	return nil
}

// count is the number of true values.
func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// hourOverage is one hour's egress beyond the quota.
type hourOverage struct {
	start time.Time
	bytes int64
}

// overages returns the non-zero overage of each hour in [from, to), all
// within the period starting at ps, given the org's hourly points of at
// least [ps, to).
func overages(points []meter.Point, ps, from, to time.Time, quota int64) []hourOverage {
	hourly := make(map[int64]int64)
	var cum int64 // egress of the period before the current hour
	for _, p := range points {
		h := meter.Hour(p.Start)
		switch {
		case h.Before(ps) || !h.Before(to):
		case h.Before(from):
			cum += p.EgressBytes
		default:
			hourly[h.Unix()] += p.EgressBytes
		}
	}
	var out []hourOverage
	for h := from; h.Before(to); h = h.Add(time.Hour) {
		start := cum
		cum += hourly[h.Unix()]
		if over := cum - max(quota, start); over > 0 {
			out = append(out, hourOverage{start: h, bytes: over})
		}
	}
	return out
}

// monthStart is the start of t's period (UTC calendar month).
func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// flush sends the due outbox entries, in the order they were queued.
func (s *Stripe) flush(ctx context.Context) error {
	now := s.now()
	due, err := s.ob.Due(ctx, meterQueue, now)
	if err != nil {
		return fmt.Errorf("outbox not readable: %w", err)
	}

	// Bookkeeping outlives ctx: a send Stripe accepted while closing is
	// still removed.
	bg := context.WithoutCancel(ctx)
	var errs []error
	for _, e := range due {
		if ctx.Err() != nil {
			break
		}
		if now.Sub(time.Unix(e.Timestamp, 0)) > maxMeterEventAge {
			if err := s.ob.Drop(bg, e, "stripe: overage meter event dropped: unreadable, or too old for Stripe to accept",
				slog.String("org", e.Org), slog.Int64("bytes", e.Value)); err != nil {
				errs = append(errs, err)
			}
			continue
		}

		err := s.post(ctx, e)
		if err == nil {
			if err := s.ob.Done(bg, e); err != nil {
				// Sent again later: the identifier makes Stripe ignore it.
				errs = append(errs, err)
				continue
			}
			s.log.Debug("stripe: overage meter event sent", slog.String("identifier", e.ID), slog.String("org", e.Org),
				slog.Int64("bytes", e.Value))
			continue
		}
		if ctx.Err() != nil {
			break // closing: not an attempt; the entry stays as it was
		}
		rejected, failed := s.retryLater(bg, e, err)
		errs = append(errs, failed...)
		if !rejected {
			break // Stripe unreachable: the rest waits for the next pass
		}
	}
	return errors.Join(errs...)
}

// retryLater records a failed send of e: one more attempt, its error, and
// when the next is due. rejected reports whether Stripe refused the event
// (rejectedByStripe) rather than being unreachable; errs say what failed.
func (s *Stripe) retryLater(ctx context.Context, e *meterEntry, sendErr error) (rejected bool, errs []error) {
	wait, err := s.ob.Retry(ctx, e, describeStripeError(sendErr))
	rejected = rejectedByStripe(sendErr)
	if rejected {
		// Configuration (no such meter or customer, a bad key): the
		// operator has to act; retried meanwhile.
		s.log.Error("stripe: overage meter event rejected; will retry", slog.String("identifier", e.ID),
			slog.String("org", e.Org), slog.Int("attempt", e.Attempts), slog.Duration("retry_in", wait), slog.String("err", e.LastError))
	}
	errs = append(errs, fmt.Errorf("meter event %s (attempt %d, next in %s): %s",
		e.ID, e.Attempts, wait.Round(time.Second), e.LastError))
	if err != nil {
		errs = append(errs, err)
	}
	return rejected, errs
}

// post sends one meter event.
func (s *Stripe) post(ctx context.Context, e *meterEntry) error {
	params := &stripego.BillingMeterEventParams{
		EventName:  stripego.String(s.cfg.MeterEventName),
		Identifier: stripego.String(e.ID),
		Payload: map[string]string{
			"stripe_customer_id": e.Customer,
			"value":              strconv.FormatInt(e.Value, 10),
		},
		Timestamp: stripego.Int64(e.Timestamp),
	}
	params.Context = ctx
	_, err := s.events.New(params)
	return err
}

// backoff is the wait after the n-th failed attempt: baseBackoff
// (report_interval) doubling up to maxRetry (1h), ±20 % jitter.
func (s *Stripe) backoff(n int) time.Duration { return outbox.Backoff(n, s.baseBackoff, s.maxRetry) }

// rejectedByStripe reports whether Stripe answered err with a 4xx that
// another attempt right now would get again (not 408, 409 or 429).
func rejectedByStripe(err error) bool {
	var se *stripego.Error
	if !errors.As(err, &se) {
		return false
	}
	switch c := se.HTTPStatusCode; {
	case c == http.StatusRequestTimeout, c == http.StatusConflict, c == http.StatusTooManyRequests:
		return false
	default:
		return c >= 400 && c < 500
	}
}

// describeStripeError is err on one line (stripe.Error's own text is its
// whole JSON).
func describeStripeError(err error) string {
	var se *stripego.Error
	if errors.As(err, &se) {
		return fmt.Sprintf("HTTP %d %s: %s", se.HTTPStatusCode, se.Type, se.Msg)
	}
	return err.Error()
}
