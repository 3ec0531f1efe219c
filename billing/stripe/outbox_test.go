package stripe

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/store"
)

// TestStripeOldOutbox: meter events an older tollgate left in its flat
// stripe_outbox bucket are moved into the outbox by New, keeping their
// retry state, and sent with their identifier.
func TestStripeOldOutbox(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id := r.PostForm.Get("identifier")
		mu.Lock()
		sent = append(sent, id+" "+r.PostForm.Get("payload[value]"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"billing.meter_event","identifier":"`+id+`"}`)
	}))
	t.Cleanup(api.Close)
	sends := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(sent)
	}

	ctx := context.Background()
	st := storetest.Open(t)
	hour := time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)
	id := meterIdentifier("acme", hour)
	old := fmt.Sprintf(`{"org":"acme","customer":"cus_acme","value":50,"timestamp":%d,"queued":%q,"attempts":2,"next":%q,"last_error":"HTTP 503"}`,
		hour.Add(time.Hour-time.Second).Unix(), hour.Add(time.Hour).Format(time.RFC3339), hour.Add(3*time.Hour).Format(time.RFC3339))
	if err := st.Apply(ctx, store.Put(bucketOldOutbox, id, []byte(old)), store.Put(bucketOldOutbox, "tollgate-x-1", []byte("{bad"))); err != nil {
		t.Fatal(err)
	}
	clock := clocktest.New(hour.Add(2 * time.Hour))
	cfg := billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test", APIBase: api.URL}
	open := func() *Stripe {
		return newTestStripe(t, cfg, Options{Accounts: newStripeAccounts(), Store: st, Usage: &stripeUsage{}, Now: clock.Now})
	}
	s := open()
	if s.Pending() != 1 {
		t.Fatalf("pending %d, want the old outbox's readable event", s.Pending())
	}
	if err := st.Scan(ctx, bucketOldOutbox, func(k, _ []byte) error { return fmt.Errorf("%s left in the old outbox", k) }); err != nil {
		t.Fatal(err)
	}
	// Its next attempt is kept: not due before it.
	if err := s.ReportNow(ctx); err != nil || len(sends()) != 0 {
		t.Fatalf("pass before the retry is due: %v, sent %v", err, sends())
	}
	clock.Set(hour.Add(3 * time.Hour))
	if err := s.ReportNow(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sends(); len(got) != 1 || got[0] != id+" 50" || s.Pending() != 0 || testutil.ToFloat64(s.sent) != 1 {
		t.Fatalf("sent %v, pending %d", got, s.Pending())
	}
	if s2 := open(); s2.Pending() != 0 {
		t.Fatalf("pending %d after a restart", s2.Pending())
	}
}
