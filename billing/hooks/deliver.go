package hooks

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-edge/tollgate/outbox"
)

const (
	hookPruneEvery = time.Hour       // how often done ids are pruned
	hookStoreRetry = 5 * time.Second // wait after a failed outbox read or write
)

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
		if err := h.ob.Forget(bg, w.queue, now); err != nil {
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
	case now.Sub(d.Queued) > h.maxAge:
		h.drop(bg, w, d, "older than max age")
		return 0
	case d.Next.After(now):
		return d.Next.Sub(now)
	}

	status, err := h.send(ctx, w, d)
	if err == nil && status >= 200 && status < 300 {
		if err := h.ob.Done(bg, d); err != nil {
			h.log.Error("hook delivered but not removed from the outbox; it will be sent again",
				slog.String("url", w.logURL), slog.String("id", d.ID), slog.Any("err", err))
			return hookStoreRetry
		}
		return 0
	}
	if ctx.Err() != nil {
		return 0 // closing: the attempt does not count, the delivery stays as it was
	}
	lastErr := "HTTP " + strconv.Itoa(status)
	if err != nil {
		lastErr = err.Error()
	}
	if status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests {
		h.rejected.Inc()
	}
	wait, err := h.ob.Retry(bg, d, lastErr)
	h.log.Warn("hook delivery failed; will retry", slog.String("url", w.logURL), slog.String("id", d.ID),
		slog.String("type", d.Type), slog.Int("attempt", d.Attempts), slog.Duration("retry_in", wait), slog.String("err", d.LastError))
	if err != nil {
		h.log.Error("hook outbox: retry not recorded", slog.String("url", w.logURL), slog.String("id", d.ID), slog.Any("err", err))
	}
	return wait
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

// drop gives a delivery up.
func (h *Hooks) drop(ctx context.Context, w *hookWorker, d *hookDelivery, why string) {
	if err := h.ob.Drop(ctx, d, "hook delivery dropped: "+why, slog.String("url", w.logURL),
		slog.String("type", d.Type), slog.String("org", d.Org)); err != nil {
		h.log.Error("hook outbox: dropping a delivery failed", slog.String("url", w.logURL), slog.Any("err", err))
	}
}

// backoff is the wait after the n-th failed attempt: baseBackoff (1s)
// doubling up to maxBackoff (10 min), ±20 % jitter. It reads baseBackoff
// at each retry.
func (h *Hooks) backoff(n int) time.Duration { return outbox.Backoff(n, h.baseBackoff, h.maxBackoff) }
