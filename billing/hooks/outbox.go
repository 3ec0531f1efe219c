package hooks

import (
	"context"
	"encoding/json"

	"github.com/tollgate-edge/tollgate/outbox"
)

// hookBox is the hooks' outbox in the store: a queue per hook URL, named by
// a hash of the URL. An event id delivered or dropped within MaxAge is
// remembered, so it is not queued again.
const hookBox = "hook_outbox"

// hookNames are the outbox's metrics.
var hookNames = outbox.Names{
	Results:     "tollgate_hook_deliveries_total",
	ResultsHelp: "Hook delivery attempts by result: ok (2xx), retry (failed, will be retried), dropped (older than max age).",
	Delivered:   "ok",
	Pending:     "tollgate_hook_outbox_pending",
	PendingHelp: "Hook deliveries waiting in the outbox.",
}

// hookDelivery is an outbox record: the event id, its delivery state, and
// what is sent.
type hookDelivery struct {
	outbox.Item
	Type string          `json:"type"`
	Org  string          `json:"org"`
	Body json.RawMessage `json:"body"` // the POST body, identical on every attempt
}

// hookOutbox holds the deliveries.
type hookOutbox = outbox.Outbox[hookDelivery, *hookDelivery]

// head returns the oldest queued delivery of w: seq 0 and d nil when the
// queue is empty.
func (h *Hooks) head(ctx context.Context, w *hookWorker) (seq uint64, d *hookDelivery, err error) {
	d, err = h.ob.Head(ctx, w.queue)
	if d == nil {
		return 0, nil, err
	}
	return d.Seq(), d, err
}
