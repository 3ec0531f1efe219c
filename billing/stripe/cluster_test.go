package stripe

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/store"
)

// TestStripeEventIDsShared: with EventIDs in Redis, an event processed by
// one node is a duplicate on another (each node has its own bbolt file), so
// a redelivery after an operator's change cannot re-apply it anywhere.
func TestStripeEventIDsShared(t *testing.T) {
	rs := redistest.Start(t)
	rc, err := store.NewRedis(store.Config{Redis: "redis://" + rs.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	kv := store.NewRedisKV(rc, nil)
	acc := newStripeAccounts()
	node := func() *stripeFixture {
		f := &stripeFixture{acc: acc, st: storetest.Open(t)}
		f.s = newTestStripe(t, billing.StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
			Options{Accounts: acc, Store: f.st, EventIDs: kv})
		f.srv = httptest.NewServer(f.s)
		t.Cleanup(f.srv.Close)
		return f
	}
	a, b := node(), node()
	at := time.Now().Add(-time.Minute)
	failed := `{"id":"in_1","object":"invoice","customer":"cus_acme"}`
	if code, out := a.deliver(t, "evt_shared", "invoice.payment_failed", at, failed); code != 200 || out != "applied" {
		t.Fatalf("node a: %d %s", code, out)
	}
	if code, out := b.deliver(t, "evt_shared", "invoice.payment_failed", at, failed); code != 200 || out != "duplicate" {
		t.Fatalf("node b, the same event: %d %s", code, out)
	}
	if n := len(acc.changes()); n != 1 {
		t.Fatalf("%d changes applied for one event delivered to two nodes", n)
	}
	// Redis down: the webhook answers 500 (Stripe retries), nothing applied.
	rs.Stop()
	if code, _ := b.deliver(t, "evt_other", "invoice.paid", at.Add(time.Second), failed); code != 500 {
		t.Fatalf("with the event ids unreachable: %d, want 500", code)
	}
	if n := len(acc.changes()); n != 1 {
		t.Fatalf("a change was applied while its id could not be checked: %d", n)
	}
}
