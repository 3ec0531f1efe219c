package stripe

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/tollgate-edge/tollgate/outbox"
	"github.com/tollgate-edge/tollgate/store"
)

// The meter event outbox: one queue in box stripe_meter_outbox.
const (
	meterBox   = "stripe_meter_outbox"
	meterQueue = "meter_events"
	// meterRemember is how long the outbox remembers a sent or dropped
	// identifier, so that a pass whose cursor did not move does not queue
	// the same hour again: as long as Stripe deduplicates identifiers.
	meterRemember = 24 * time.Hour
)

// meterNames are the outbox's metrics.
var meterNames = outbox.Names{
	Results:     "tollgate_stripe_meter_events_total",
	ResultsHelp: "Overage meter event sends by result: sent (accepted by Stripe), retry (failed, kept for a later attempt), dropped (too old for Stripe to accept).",
	Delivered:   "sent",
	Pending:     "tollgate_stripe_outbox_pending",
	PendingHelp: "Overage meter events waiting in the outbox to be sent to Stripe.",
}

// meterOutbox holds the meter events not yet accepted by Stripe.
type meterOutbox = outbox.Outbox[meterEntry, *meterEntry]

// adoptOldOutbox moves the meter events left in bucketOldOutbox into the
// outbox, in identifier order, with their attempts and next attempt time.
// They are queued before they are deleted: after a crash in between, the
// outbox skips those it holds.
func (s *Stripe) adoptOldOutbox(ctx context.Context) error {
	var recs []*meterEntry
	var ops []store.Op
	err := s.st.Scan(ctx, bucketOldOutbox, func(k, v []byte) error {
		ops = append(ops, store.Delete(bucketOldOutbox, string(k)))
		e := &meterEntry{}
		if err := json.Unmarshal(v, e); err != nil {
			s.log.Error("stripe: overage meter event dropped: not readable", slog.String("identifier", string(k)))
			return nil
		}
		e.ID = string(k)
		recs = append(recs, e)
		return nil
	})
	if err != nil || len(ops) == 0 {
		return err
	}
	if _, err := s.ob.Add(ctx, []string{meterQueue}, recs...); err != nil {
		return err
	}
	if err := s.st.Apply(ctx, ops...); err != nil {
		return err
	}
	s.log.Info("stripe: pending meter events moved into the outbox", slog.Int("events", len(recs)))
	return nil
}
