package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// hookLog is an Emitter that keeps the hooks' types in order.
type hookLog struct {
	mu    sync.Mutex
	types []string
}

func (h *hookLog) Emit(_ context.Context, e billing.HookEvent) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.types = append(h.types, e.Type)
	return nil
}

func (h *hookLog) count(typ string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, t := range h.types {
		if t == typ {
			n++
		}
	}
	return n
}

// The prepaid plan of the credit tests: 1 GiB of egress and 100 MiB of
// storage included; 50 (cents) per GiB beyond, 1000 per GiB-month stored
// beyond; 48 h of grace.
var paygPlan = billing.PlanConfig{Name: "payg", Prepaid: true, EgressBytes: 1 << 30, StorageBytes: 100 << 20,
	OveragePricePerGiB: 50, StoragePricePerGiBMonth: 1000, GracePeriod: 48 * time.Hour}

// creditFixture is a credit-only org acme on payg: a real Billing, ledger,
// registry and usage store on bbolt, the webhook in front, a fake clock.
type creditFixture struct {
	*stripeFixture
	bill   *billing.Billing
	reg    *sites.Registry
	ledger *credit.Ledger
	usage  *store.BoltUsage
	clock  *clocktest.Clock
	hooks  *hookLog
	seq    uint64
}

func newCreditFixture(t *testing.T, start time.Time) *creditFixture {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	clock := clocktest.New(start)
	ledger, err := credit.New(credit.Config{Store: store.NewBoltCredit(st), Currency: "eur", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := &creditFixture{stripeFixture: &stripeFixture{st: st}, ledger: ledger, usage: store.NewBoltUsage(st), clock: clock, hooks: &hookLog{}, reg: reg}
	f.bill, err = billing.New(ctx, billing.Config{Plans: []billing.PlanConfig{paygPlan}, CreditLowThreshold: 500},
		billing.Options{Sites: reg, Store: st, Usage: f.usage, Credits: ledger, Hooks: f.hooks, Metrics: prometheus.NewRegistry(),
			Now: clock.Now, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.bill.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "payg"}); err != nil {
		t.Fatal(err)
	}
	f.s = newTestStripe(t, billing.StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
		Options{Accounts: f.bill, Store: st, Credits: f.bill, Now: clock.Now})
	f.srv = httptest.NewServer(f.s)
	t.Cleanup(f.srv.Close)
	return f
}

// use records usage of acme in the hour starting at hour, as a node's flush.
func (f *creditFixture) use(t *testing.T, hour time.Time, v meter.Values) {
	t.Helper()
	f.seq++
	b := &meter.Batch{Node: "n1", Seq: f.seq, Time: hour.Add(30 * time.Minute), Deltas: []meter.Delta{{Org: "acme", Site: "www", Values: v}}}
	if err := f.usage.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

func (f *creditFixture) state() string { return f.reg.Snapshot().Orgs.Get("acme").State }

// topUpSessionObject is a paid top-up session for acme.
func topUpSessionObject(id string, amount int64) string {
	return fmt.Sprintf(`{"id":%q,"object":"checkout.session","mode":"payment","client_reference_id":"acme","customer":null,`+
		`"payment_status":"paid","amount_total":%d,"currency":"eur","metadata":{"tollgate_credit":"top_up"}}`, id, amount)
}

// TestCreditScriptedMonth: a credit-only org through March: a grant, usage
// drawn hour by hour, credit.low, exhaustion, grace, expired (402), a
// top-up through a redelivered webhook, restored; the ledger sums exactly
// to the metered usage × the plan's prices.
func TestCreditScriptedMonth(t *testing.T) {
	march := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	f := newCreditFixture(t, march)
	ctx := context.Background()
	if _, ok, _, err := f.bill.Credit(ctx, credit.Entry{Org: "acme", Amount: 2000, Kind: credit.Grant, Source: "op-1", Actor: "operator"}); err != nil || !ok {
		t.Fatalf("grant: %v %v", ok, err)
	}
	const egressPerHour, storedPerHour = 100<<20 + 12_345, (200 << 20) * 3600
	var egress, storageOver int64
	var exhaustedAt, expiredAt, restoredAt time.Time
	for h := 0; h < 31*24; h++ {
		hour := march.Add(time.Duration(h) * time.Hour)
		v := meter.Values{StorageByteSeconds: storedPerHour}
		if f.bill.Gate("acme").Decision() == access.Allow {
			v.EgressBytes = egressPerHour // paused sites send nothing
		}
		egress += v.EgressBytes
		storageOver += v.StorageByteSeconds - paygPlan.StorageBytes*3600
		f.use(t, hour, v)
		if h == 600 { // the tenant pays 50 EUR; Stripe delivers the event twice and the async success too
			if f.state() != sites.StateExpired {
				t.Fatalf("state %s before the top-up, want expired", f.state())
			}
			for _, d := range []struct{ id, typ, want string }{
				{"evt_top_1", "checkout.session.completed", "applied"},
				{"evt_top_1", "checkout.session.completed", "duplicate"},
				{"evt_top_2", "checkout.session.async_payment_succeeded", "duplicate"},
			} {
				if code, out := f.deliver(t, d.id, d.typ, hour, topUpSessionObject("cs_top_1", 5000)); code != 200 || out != d.want {
					t.Fatalf("%s %s: %d %s, want %s", d.id, d.typ, code, out, d.want)
				}
			}
			if f.state() == sites.StateActive {
				restoredAt = f.clock.Now()
			}
		}
		f.clock.Set(hour.Add(time.Hour + 6*time.Minute)) // the hour ended and settled
		before := f.state()
		f.bill.Evaluate(ctx)
		switch after := f.state(); {
		case before != after && after == sites.StatePastDue:
			exhaustedAt = f.clock.Now()
		case before != after && after == sites.StateExpired:
			expiredAt = f.clock.Now()
			if d := f.bill.Gate("acme").Decision(); d != access.BlockExpired {
				t.Fatalf("expired org's decision %v, want BlockExpired (402)", d)
			}
		}
	}
	if exhaustedAt.IsZero() || expiredAt.Sub(exhaustedAt) < 47*time.Hour || expiredAt.Sub(exhaustedAt) > 49*time.Hour {
		t.Fatalf("exhausted at %s, expired at %s: want the 48 h grace in between", exhaustedAt, expiredAt)
	}
	if restoredAt.IsZero() || restoredAt.Before(expiredAt) || f.state() != sites.StateActive || f.bill.Gate("acme").Decision() != access.Allow {
		t.Fatalf("restored at %s, state %s, decision %v", restoredAt, f.state(), f.bill.Gate("acme").Decision())
	}
	for typ, want := range map[string]int{"credit.low": 1, "credit.exhausted": 1, "credit.topped_up": 2,
		"grace.started": 1, "payment.failed": 0, "org.expired": 1, "org.restored": 1} {
		if got := f.hooks.count(typ); got != want {
			t.Errorf("%s fired %d times, want %d", typ, got, want)
		}
	}

	// The ledger: exactly the metered usage × the prices, one entry per hour.
	wantUsage := (egress-paygPlan.EgressBytes)*50/(1<<30) + storageOver*1000/((1<<30)*30*24*3600)
	entries, err := f.ledger.Entries(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var usage, sum int64
	sources := map[string]bool{}
	for _, e := range entries {
		sum += e.Amount
		if e.Kind == credit.Usage {
			usage -= e.Amount
			if sources[e.Source] {
				t.Fatalf("hour %s drawn twice", e.Source)
			}
			sources[e.Source] = true
		}
	}
	bal, _ := f.ledger.Balance(ctx, "acme")
	if usage != wantUsage || sum != 2000+5000-wantUsage || bal != sum || entries[len(entries)-1].Balance != bal {
		t.Fatalf("usage drawn %d, want %d; entries sum %d, balance %d", usage, wantUsage, sum, bal)
	}
	t.Logf("egress %d B, storage over %d B·s: %d drawn in %d hourly entries, balance %d", egress, storageOver, usage, len(sources), bal)
}

// fakeCredits is a Credits of currency eur that credits nothing (TopUp
// reads only the currency).
type fakeCredits struct{}

func (fakeCredits) Credit(context.Context, credit.Entry) (credit.Entry, bool, int64, error) {
	return credit.Entry{}, false, 0, nil
}
func (fakeCredits) Currency() string { return "eur" }

// TestTopUpSession against stripe-mock: a Checkout session in payment mode
// for the amount in the ledger's currency, marked as a top-up, for the org.
func TestTopUpSession(t *testing.T) {
	sm := stripetest.Start(t)
	rec := &formRecorder{base: http.DefaultTransport, sent: map[string]url.Values{}}
	cfg := billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test", APIBase: sm.URL(),
		CheckoutSuccessURL: "https://console.example/orgs/{org}/paid", CheckoutCancelURL: "https://console.example/orgs/{org}/billing"}
	s := newTestStripe(t, cfg, Options{Accounts: newStripeAccounts(), Store: storetest.Open(t), Plans: fakePlans{}, Credits: fakeCredits{},
		HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}})
	ctx := context.Background()
	link, err := s.TopUp(ctx, "lapsed", 2500)
	if err != nil || !strings.HasPrefix(link, "https://") {
		t.Fatalf("top-up: %q, %v", link, err)
	}
	form := rec.sent["/v1/checkout/sessions"]
	for k, want := range map[string]string{"mode": "payment", "client_reference_id": "lapsed", "customer": "cus_lapsed",
		"line_items[0][price_data][currency]": "eur", "line_items[0][price_data][unit_amount]": "2500",
		"line_items[0][quantity]": "1", "metadata[tollgate_credit]": "top_up", "success_url": "https://console.example/orgs/lapsed/paid"} {
		if got := form.Get(k); got != want {
			t.Errorf("session %s = %q, want %q", k, got, want)
		}
	}
	for name, tt := range map[string]struct {
		org    string
		amount int64
		want   error
	}{
		"unknown org": {"nope", 100, sites.ErrNotFound},
		"zero":        {"acme", 0, sites.ErrInvalid},
		"too much":    {"acme", credit.MaxAmount + 1, sites.ErrInvalid},
	} {
		if _, err := s.TopUp(ctx, tt.org, tt.amount); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", name, err, tt.want)
		}
	}
}

// TestTopUpWebhookRefusals: top-up sessions that credit nothing.
func TestTopUpWebhookRefusals(t *testing.T) {
	f := newCreditFixture(t, time.Now().UTC())
	now := time.Now()
	for _, tt := range []struct {
		name, object string
		code         int
		outcome      string
	}{
		{"unpaid", strings.Replace(topUpSessionObject("cs_1", 100), `"paid"`, `"unpaid"`, 1), 200, "ignored"},
		{"other currency", strings.Replace(topUpSessionObject("cs_2", 100), `"eur"`, `"usd"`, 1), 422, ""},
		{"unknown org", strings.Replace(topUpSessionObject("cs_3", 100), `"acme"`, `"nope"`, 1), 422, ""},
	} {
		code, out := f.deliver(t, "evt_"+tt.name, "checkout.session.completed", now, tt.object)
		if code != tt.code || (tt.outcome != "" && out != tt.outcome) {
			t.Errorf("%s: %d %s", tt.name, code, out)
		}
	}
	if bal, _ := f.ledger.Balance(context.Background(), "acme"); bal != 0 {
		t.Fatalf("balance %d after refused top-ups", bal)
	}
}

// TestTopUpOutOfOrder: a delayed payment's success arrives before the
// session's completion (still unpaid then, and older): the credit is
// added once, by the success, and the completion changes nothing.
func TestTopUpOutOfOrder(t *testing.T) {
	f := newCreditFixture(t, time.Now().UTC())
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	paid := topUpSessionObject("cs_late", 700)
	unpaid := strings.Replace(paid, `"paid"`, `"unpaid"`, 1)
	for _, d := range []struct {
		id, typ, object string
		at              time.Time
		want            string
	}{
		{"evt_async", "checkout.session.async_payment_succeeded", paid, t0.Add(30 * time.Second), "applied"},
		{"evt_done", "checkout.session.completed", unpaid, t0, "ignored"},
		{"evt_async", "checkout.session.async_payment_succeeded", paid, t0.Add(30 * time.Second), "duplicate"},
	} {
		if code, out := f.deliver(t, d.id, d.typ, d.at, d.object); code != 200 || out != d.want {
			t.Fatalf("%s %s: %d %s, want %s", d.id, d.typ, code, out, d.want)
		}
	}
	if bal, _ := f.ledger.Balance(context.Background(), "acme"); bal != 700 {
		t.Fatalf("balance %d, want 700 once", bal)
	}
}
