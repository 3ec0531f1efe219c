package stripe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

const stripeTestSecret = "whsec_test_0123456789abcdef"

// stripeAccounts is a fake Accounts: orgs and plans in memory, the
// lifecycle's rules (transitions, suspension, stale events), and a record
// of every Change it applied.
type stripeAccounts struct {
	mu      sync.Mutex
	orgs    map[string]*sites.Org
	quotas  map[string]int64 // plan → egress bytes
	applied []stripeApplied
}

type stripeApplied struct {
	org string
	c   billing.Change
}

var _ Accounts = (*stripeAccounts)(nil)

// newStripeAccounts has plans free, pro and team (no quotas) and orgs acme
// (linked to cus_acme) and beta (no customer), both active on free.
func newStripeAccounts() *stripeAccounts {
	return &stripeAccounts{
		orgs: map[string]*sites.Org{
			"acme": {ID: "acme", Plan: "free", State: sites.StateActive, StripeCustomer: "cus_acme"},
			"beta": {ID: "beta", Plan: "free", State: sites.StateActive},
		},
		quotas: map[string]int64{"free": 0, "pro": 0, "team": 0},
	}
}

func (a *stripeAccounts) Apply(_ context.Context, id string, c billing.Change) (sites.Org, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.orgs[id]
	if o == nil {
		return sites.Org{}, fmt.Errorf("org %q: %w", id, sites.ErrNotFound)
	}
	if !c.StripeEventAt.IsZero() && c.StripeEventAt.Before(o.StripeEventAt.Time()) {
		return *o, fmt.Errorf("%w: event of %s", billing.ErrStale, c.StripeEventAt)
	}
	if _, ok := a.quotas[c.Plan]; c.Plan != "" && !ok {
		return *o, fmt.Errorf("%w: plan %q does not exist", sites.ErrInvalid, c.Plan)
	}
	next := *o
	if c.State != "" && c.State != o.State && o.State != sites.StateSuspended {
		if !billing.Allowed(o.State, c.State) {
			return *o, fmt.Errorf("%w: %s → %s", billing.ErrTransition, o.State, c.State)
		}
		next.State = c.State
	}
	if c.Plan != "" {
		next.Plan = c.Plan
	}
	if c.StripeCustomer != "" {
		next.StripeCustomer = c.StripeCustomer
	}
	if !c.StripeEventAt.IsZero() {
		next.StripeEventAt = sites.At(c.StripeEventAt)
	}
	*o = next
	a.applied = append(a.applied, stripeApplied{id, c})
	return next, nil
}

func (a *stripeAccounts) OrgByCustomer(customer string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, o := range a.orgs {
		if o.StripeCustomer == customer { // like *Billing: "" matches orgs without one
			return id, true
		}
	}
	return "", false
}

func (a *stripeAccounts) OrgExists(org string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.orgs[org] != nil
}

func (a *stripeAccounts) PlanExists(plan string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.quotas[plan]
	return ok
}

func (a *stripeAccounts) DefaultPlan() string { return "free" }

func (a *stripeAccounts) Quota(org string) (int64, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.orgs[org]
	if o == nil {
		return 0, ""
	}
	return a.quotas[o.Plan], o.StripeCustomer
}

func (a *stripeAccounts) Orgs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for id := range a.orgs {
		ids = append(ids, id)
	}
	return ids
}

// set puts an org (replacing it) and its plan's quota.
func (a *stripeAccounts) set(o sites.Org, quota int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.orgs[o.ID] = &o
	a.quotas[o.Plan] = quota
}

func (a *stripeAccounts) org(id string) sites.Org {
	a.mu.Lock()
	defer a.mu.Unlock()
	return *a.orgs[id]
}

func (a *stripeAccounts) changes() []stripeApplied {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.applied)
}

// stripeFixture is a Stripe on a fresh store with the fake accounts, its
// webhook served by a real HTTP server.
type stripeFixture struct {
	acc *stripeAccounts
	st  *store.Bolt
	s   *Stripe
	srv *httptest.Server
}

func newStripeFixture(t *testing.T) *stripeFixture {
	t.Helper()
	f := &stripeFixture{acc: newStripeAccounts(), st: storetest.Open(t)}
	f.s = newTestStripe(t, billing.StripeConfig{WebhookSecret: stripeTestSecret, WebhookHost: "billing.test"},
		Options{Accounts: f.acc, Store: f.st})
	f.srv = httptest.NewServer(f.s)
	t.Cleanup(f.srv.Close)
	return f
}

// newTestStripe builds a Stripe with a fresh registry and a test logger,
// closed when the test ends (before its store).
func newTestStripe(t *testing.T, cfg billing.StripeConfig, opts Options) *Stripe {
	t.Helper()
	opts.Metrics = prometheus.NewRegistry()
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// stripeEvent is an event as Stripe sends it. The API version is not
// stripe-go's pin on purpose.
func stripeEvent(id, typ string, created time.Time, object string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"object":"event","api_version":"2024-06-20","created":%d,"livemode":false,"type":%q,"data":{"object":%s}}`,
		id, created.Unix(), typ, object)
}

// post sends body with the given Stripe-Signature ("" for none).
func (f *stripeFixture) post(t *testing.T, body []byte, signature string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/stripe/webhook", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("Stripe-Signature", signature)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// deliver signs and posts an event; it returns the status and the
// response's outcome (200) or problem detail.
func (f *stripeFixture) deliver(t *testing.T, id, typ string, created time.Time, object string) (int, string) {
	t.Helper()
	body := stripeEvent(id, typ, created, object)
	signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: stripeTestSecret, Timestamp: time.Now()})
	code, h, b := f.post(t, signed.Payload, signed.Header)
	var resp struct {
		Received bool
		Outcome  string
		Status   int
		Detail   string
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatalf("%s: response %d %q: %v", typ, code, b, err)
	}
	if code == http.StatusOK {
		if !resp.Received || h.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: 200 response %q (%s)", typ, b, h.Get("Content-Type"))
		}
		return code, resp.Outcome
	}
	if h.Get("Content-Type") != "application/problem+json" || resp.Status != code {
		t.Fatalf("%s: %d response %q (%s) is not a problem", typ, code, b, h.Get("Content-Type"))
	}
	return code, resp.Detail
}

func (f *stripeFixture) count(outcome string) float64 {
	return testutil.ToFloat64(f.s.webhooks.WithLabelValues(outcome))
}

func subscriptionObject(customer, status, priceJSON, metadata string) string {
	items := `[]`
	if priceJSON != "" {
		items = `[{"id":"si_1","object":"subscription_item","price":` + priceJSON + `}]`
	}
	if metadata == "" {
		metadata = `{}`
	}
	return fmt.Sprintf(`{"id":"sub_1","object":"subscription","customer":%q,"status":%q,"metadata":%s,"items":{"object":"list","data":%s}}`,
		customer, status, metadata, items)
}

func price(id, lookupKey, planMeta string) string {
	meta := `{}`
	if planMeta != "" {
		meta = fmt.Sprintf(`{"tollgate_plan":%q}`, planMeta)
	}
	lk := `null`
	if lookupKey != "" {
		lk = fmt.Sprintf("%q", lookupKey)
	}
	return fmt.Sprintf(`{"id":%q,"object":"price","lookup_key":%s,"metadata":%s}`, id, lk, meta)
}

func TestStripeConfig(t *testing.T) {
	ok := billing.StripeConfig{SecretKey: "sk_test_1", WebhookSecret: "whsec_1", WebhookHost: "billing.example.net"}
	tests := []struct {
		name string
		edit func(c *billing.StripeConfig)
		want []string // keys named by the error; none: valid
	}{
		{"valid", func(*billing.StripeConfig) {}, nil},
		{"off", func(c *billing.StripeConfig) { *c = billing.StripeConfig{WebhookHost: "not a host"} }, nil},
		{"webhook only", func(c *billing.StripeConfig) { c.SecretKey = "" }, nil},
		{"secret key only", func(c *billing.StripeConfig) { c.WebhookSecret, c.WebhookHost = "", "" },
			[]string{"billing.stripe.webhook_secret", "billing.stripe.webhook_host"}},
		{"publishable key", func(c *billing.StripeConfig) { c.SecretKey = "pk_test_1" }, []string{"billing.stripe.secret_key"}},
		{"not a signing secret", func(c *billing.StripeConfig) { c.WebhookSecret = "hunter2" }, []string{"billing.stripe.webhook_secret"}},
		{"host with a port", func(c *billing.StripeConfig) { c.WebhookHost = "billing.example.net:443" }, []string{"billing.stripe.webhook_host"}},
		{"relative path", func(c *billing.StripeConfig) { c.WebhookPath = "stripe" }, []string{"billing.stripe.webhook_path"}},
		{"api base", func(c *billing.StripeConfig) { c.APIBase = "api.stripe.com" }, []string{"billing.stripe.api_base"}},
		{"durations", func(c *billing.StripeConfig) { c.ReportInterval, c.ReportDelay, c.Tolerance = time.Millisecond, -1, -1 },
			[]string{"billing.stripe.report_interval", "billing.stripe.report_delay", "billing.stripe.tolerance"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid, want errors naming %v", tc.want)
			}
			for _, k := range tc.want {
				if !strings.Contains(err.Error(), k+":") {
					t.Fatalf("%v does not name %s", err, k)
				}
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "pk_test_1") {
				t.Fatalf("the error repeats a secret: %v", err)
			}
		})
	}

	var d billing.StripeConfig
	d.Defaults()
	if d.WebhookPath != "/stripe/webhook" || d.APIBase != "https://api.stripe.com" || d.MeterEventName != "tollgate_egress_overage" ||
		d.ReportInterval != time.Minute || d.ReportDelay != 5*time.Minute || d.Tolerance != 5*time.Minute || d.Enabled() {
		t.Fatalf("defaults %+v", d)
	}

	st := storetest.Open(t)
	if _, err := New(billing.StripeConfig{}, Options{Accounts: newStripeAccounts(), Store: st, Metrics: prometheus.NewRegistry()}); err == nil {
		t.Fatal("New without secrets: no error")
	}
	if _, err := New(ok, Options{Store: st}); err == nil || !strings.Contains(err.Error(), "Accounts") {
		t.Fatalf("New without Accounts: %v", err)
	}
	var nilStripe *Stripe
	if err := nilStripe.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDefaultsAreStripeGos: billing writes out stripe-go's API base and
// webhook tolerance so that it does not link stripe-go; they must agree.
func TestDefaultsAreStripeGos(t *testing.T) {
	var c billing.StripeConfig
	c.Defaults()
	if c.APIBase != stripego.APIURL || c.Tolerance != webhook.DefaultTolerance {
		t.Fatalf("billing's defaults api_base %q, tolerance %s; stripe-go's %q, %s",
			c.APIBase, c.Tolerance, stripego.APIURL, webhook.DefaultTolerance)
	}
}
