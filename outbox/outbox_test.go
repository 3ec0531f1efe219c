package outbox_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/outbox"
	"github.com/tollgate-edge/tollgate/store"
)

// note is a record type: the outbox's Item beside its own fields.
type note struct {
	outbox.Item
	Text string `json:"text"`
}

type notes = outbox.Outbox[note, *note]

var names = outbox.Names{Results: "test_results_total", Delivered: "ok", Pending: "test_pending"}

// open builds an outbox on st serving queues a and b, with a fixed 1 min
// backoff.
func open(t *testing.T, st *store.Bolt, clock *clocktest.Clock, remember time.Duration, log *bytes.Buffer) (*notes, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if log == nil {
		log = &bytes.Buffer{}
	}
	o, err := outbox.New[note](outbox.Config{Store: st, Box: "test_outbox", Queues: []string{"a", "b"}, Metrics: reg,
		Names: names, Logger: slog.New(slog.NewTextHandler(log, nil)), Now: clock.Now,
		Backoff: func(int) time.Duration { return time.Minute }, Remember: remember})
	if err != nil {
		t.Fatal(err)
	}
	return o, reg
}

func mustAdd(t *testing.T, o *notes, queues []string, recs ...*note) []bool {
	t.Helper()
	added, err := o.Add(context.Background(), queues, recs...)
	if err != nil {
		t.Fatal(err)
	}
	return added
}

func texts(recs []*note) string {
	var s []string
	for _, r := range recs {
		s = append(s, r.Text)
	}
	return strings.Join(s, ",")
}

func TestOutboxQueue(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	clock := clocktest.New(time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC))
	o, reg := open(t, st, clock, time.Hour, nil)

	// One record into two queues, several into one, in one call each.
	if got := mustAdd(t, o, []string{"a", "b"}, &note{Item: outbox.Item{ID: "1"}, Text: "one"}); !got[0] || !got[1] {
		t.Fatalf("added %v", got)
	}
	got := mustAdd(t, o, []string{"a"}, &note{Item: outbox.Item{ID: "2"}, Text: "two"},
		&note{Item: outbox.Item{ID: "1"}, Text: "one again"}, &note{Text: "no id"})
	if !got[0] || got[1] || !got[2] {
		t.Fatalf("added %v, want the pending id 1 skipped", got)
	}
	if _, err := o.Add(ctx, []string{"c"}, &note{Text: "x"}); err == nil {
		t.Fatal("Add to a queue not served: no error")
	}
	if o.Pending() != 4 {
		t.Fatalf("pending %d", o.Pending())
	}
	if n, err := testutil.GatherAndCount(reg, "test_pending"); err != nil || n != 1 {
		t.Fatalf("pending gauge: %d, %v", n, err)
	}

	head, err := o.Head(ctx, "a")
	if err != nil || head == nil || head.Text != "one" || head.Seq() == 0 || !head.Queued.Equal(clock.Now()) {
		t.Fatalf("head %+v, %v", head, err)
	}
	// A failed attempt: state kept, not due until the backoff passed.
	wait, err := o.Retry(ctx, head, "HTTP 503")
	if err != nil || wait != time.Minute || head.Attempts != 1 || !head.Next.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("retry: %s, %v, %+v", wait, err, head)
	}
	due, err := o.Due(ctx, "a", clock.Now())
	if err != nil || texts(due) != "two,no id" {
		t.Fatalf("due now: %q, %v", texts(due), err)
	}
	clock.Add(time.Minute)
	due, _ = o.Due(ctx, "a", clock.Now())
	if texts(due) != "one,two,no id" || due[0].Attempts != 1 || due[0].LastError != "HTTP 503" {
		t.Fatalf("due after the backoff: %q %+v", texts(due), due[0])
	}

	// Done and Drop remove, count and remember the id.
	if err := o.Done(ctx, due[0]); err != nil {
		t.Fatal(err)
	}
	if err := o.Drop(ctx, due[1], "given up"); err != nil {
		t.Fatal(err)
	}
	delivered, retried, dropped := o.Results()
	if o.Pending() != 2 || testutil.ToFloat64(delivered) != 1 || testutil.ToFloat64(retried) != 1 || testutil.ToFloat64(dropped) != 1 {
		t.Fatalf("pending %d, results %v %v %v", o.Pending(), testutil.ToFloat64(delivered), testutil.ToFloat64(retried), testutil.ToFloat64(dropped))
	}
	if got := mustAdd(t, o, []string{"a", "b"}, &note{Item: outbox.Item{ID: "1"}}); got[0] || got[1] {
		t.Fatalf("a delivered id (a) and a pending one (b) queued again: %v", got)
	}

	// Forgotten after Remember: queued again.
	clock.Add(30 * time.Minute)
	if err := o.Forget(ctx, "a", clock.Now()); err != nil {
		t.Fatal(err)
	}
	if got := mustAdd(t, o, []string{"a"}, &note{Item: outbox.Item{ID: "1"}}); got[0] {
		t.Fatal("id forgotten before Remember")
	}
	clock.Add(time.Hour)
	if err := o.Forget(ctx, "a", clock.Now()); err != nil {
		t.Fatal(err)
	}
	if got := mustAdd(t, o, []string{"a"}, &note{Item: outbox.Item{ID: "1"}, Text: "later"}); !got[0] {
		t.Fatal("id still remembered after Remember")
	}

	// A new outbox on the same store counts what is pending.
	o2, _ := open(t, st, clock, time.Hour, nil)
	if o2.Pending() != 3 {
		t.Fatalf("pending after reopening: %d, want 3", o2.Pending())
	}
	due, _ = o2.Due(ctx, "a", clock.Now())
	if texts(due) != "no id,later" {
		t.Fatalf("queue a after reopening: %q", texts(due))
	}
}

func TestOutboxRememberNothing(t *testing.T) {
	o, _ := open(t, storetest.Open(t), clocktest.New(time.Now()), 0, nil)
	ctx := context.Background()
	rec := &note{Item: outbox.Item{ID: "x"}}
	mustAdd(t, o, []string{"a"}, rec)
	head, _ := o.Head(ctx, "a")
	if err := o.Done(ctx, head); err != nil {
		t.Fatal(err)
	}
	if got := mustAdd(t, o, []string{"a"}, rec); !got[0] {
		t.Fatal("with Remember 0 a delivered id was not queued again")
	}
}

func TestOutboxUnreadableAndStray(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	clock := clocktest.New(time.Now())
	if _, err := st.Append(ctx, "test_outbox", []outbox.Add{
		{Queue: "a", ID: "bad", Record: []byte("{not json")},
		{Queue: "a", ID: "good", Record: []byte(`{"id":"good","text":"fine"}`)},
		{Queue: "gone", ID: "old", Record: []byte(`{"id":"old"}`)},
	}); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	o, _ := open(t, st, clock, time.Hour, &log)
	if stray := o.Stray(); o.Pending() != 2 || len(stray) != 1 || stray["gone"] != 1 {
		t.Fatalf("pending %d, stray %v", o.Pending(), stray)
	}
	head, err := o.Head(ctx, "a")
	if err != nil || head == nil || head.Text != "fine" {
		t.Fatalf("head %+v, %v", head, err)
	}
	if _, _, dropped := o.Results(); o.Pending() != 1 || testutil.ToFloat64(dropped) != 1 || !strings.Contains(log.String(), "not readable") {
		t.Fatalf("pending %d, dropped %v; log:\n%s", o.Pending(), testutil.ToFloat64(dropped), log.String())
	}
}

func TestOutboxConfig(t *testing.T) {
	err := outbox.Config{Remember: -1}.Validate()
	for _, want := range []string{"Store", "Names", "Remember"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}
