package stripe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

func TestStripeOverages(t *testing.T) {
	ps := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return ps.Add(time.Duration(n) * time.Hour) }
	pt := func(n int, bytes int64) meter.Point {
		return meter.Point{Start: h(n), Values: meter.Values{EgressBytes: bytes}}
	}
	tests := []struct {
		name     string
		points   []meter.Point
		from, to int
		quota    int64
		want     map[int]int64
	}{
		{"below the quota", []meter.Point{pt(0, 400), pt(1, 500)}, 0, 5, 1000, map[int]int64{}},
		{"crossing within an hour", []meter.Point{pt(0, 900), pt(3, 250)}, 0, 5, 1000, map[int]int64{3: 150}},
		{"every hour past the quota", []meter.Point{pt(0, 1200), pt(1, 10), pt(4, 7)}, 0, 5, 1000, map[int]int64{0: 200, 1: 10, 4: 7}},
		{"hours before from count toward the total only", []meter.Point{pt(0, 900), pt(2, 300), pt(3, 40)}, 3, 5, 1000, map[int]int64{3: 40}},
		{"points outside the range are not counted", []meter.Point{pt(-1, 5000), pt(1, 999), pt(6, 5000)}, 0, 5, 1000, map[int]int64{}},
		{"exactly the quota", []meter.Point{pt(0, 1000)}, 0, 2, 1000, map[int]int64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[int]int64{}
			for _, o := range overages(tc.points, ps, h(tc.from), h(tc.to), tc.quota) {
				got[int(o.start.Sub(ps)/time.Hour)] = o.bytes
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("overages %v, want %v", got, tc.want)
			}
		})
	}
}

// stripeUsage is a fake meter.Reader.
type stripeUsage struct {
	mu     sync.Mutex
	points map[string][]meter.Point
}

func (u *stripeUsage) add(org string, hour time.Time, egress int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.points == nil {
		u.points = map[string][]meter.Point{}
	}
	u.points[org] = append(u.points[org], meter.Point{Start: hour, Values: meter.Values{EgressBytes: egress}})
}

func (u *stripeUsage) Hourly(_ context.Context, org string, from, to time.Time) ([]meter.Point, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []meter.Point
	for _, p := range u.points[org] {
		if !p.Start.Before(from) && p.Start.Before(to) {
			out = append(out, p)
		}
	}
	return out, nil
}

func (u *stripeUsage) PeriodTotals(context.Context, string, string, int) ([]meter.OrgTotal, string, error) {
	return nil, "", errors.New("not used")
}

// meterSend is one meter event request as stripe-mock received it.
type meterSend struct {
	identifier, customer, value, eventName string
	timestamp                              string
}

// meterRecorder is an http.RoundTripper that records the meter events
// stripe-mock accepted and counts failed attempts.
type meterRecorder struct {
	base   http.RoundTripper
	mu     sync.Mutex
	ok     []meterSend
	failed int
}

func (r *meterRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var form url.Values
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		form, _ = url.ParseQuery(string(b))
	}
	resp, err := r.base.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && resp.StatusCode == http.StatusOK && req.URL.Path == "/v1/billing/meter_events" {
		r.ok = append(r.ok, meterSend{identifier: form.Get("identifier"), customer: form.Get("payload[stripe_customer_id]"),
			value: form.Get("payload[value]"), eventName: form.Get("event_name"), timestamp: form.Get("timestamp")})
	} else {
		r.failed++
	}
	return resp, err
}

func (r *meterRecorder) sent() []meterSend {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ok)
}

func (r *meterRecorder) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// newMeterRecorder records on a transport without keep-alive, so a
// restarted stripe-mock never meets a connection of the previous one.
func newMeterRecorder() *meterRecorder {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	return &meterRecorder{base: tr}
}

func TestStripeMeterEvents(t *testing.T) {
	sm := stripetest.Start(t)
	rec := newMeterRecorder()
	acc := newStripeAccounts()
	usage := &stripeUsage{}
	st := storetest.Open(t)
	clock := clocktest.New(time.Time{})
	cfg := billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test", APIBase: sm.URL()}
	open := func() *Stripe {
		return newTestStripe(t, cfg, Options{Accounts: acc, Store: st, Usage: usage, Now: clock.Now,
			HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}})
	}

	day := func(d, hour int) time.Time { return time.Date(2026, 3, d, hour, 0, 0, 0, time.UTC) }
	acc.set(sites.Org{ID: "acme", Plan: "metered", State: sites.StateActive, StripeCustomer: "cus_acme"}, 1000)
	acc.set(sites.Org{ID: "delta", Plan: "small", State: sites.StateActive, StripeCustomer: "cus_delta"}, 500)
	acc.set(sites.Org{ID: "beta", Plan: "unlimited", State: sites.StateActive, StripeCustomer: "cus_beta"}, 0)
	acc.set(sites.Org{ID: "gamma", Plan: "nocustomer", State: sites.StateActive}, 100)
	usage.add("acme", day(28, 23).AddDate(0, -1, 0), 5000) // February: another period
	usage.add("acme", day(1, 0), 600)
	usage.add("acme", day(2, 5), 300)   // 900
	usage.add("acme", day(5, 10), 250)  // 1150: 150 over
	usage.add("acme", day(6, 0), 100)   // 100 over
	usage.add("acme", day(10, 10), 50)  // 50 over
	usage.add("acme", day(10, 11), 999) // due from 12:05
	usage.add("delta", day(3, 7), 2000) // 1500 over
	usage.add("beta", day(3, 7), 1<<40) // no quota
	usage.add("gamma", day(3, 7), 1<<40)

	type sent struct {
		customer string
		value    string
		ts       time.Time
	}
	want := map[string]sent{}
	expect := func(org, customer string, hour time.Time, value string) {
		want[meterIdentifier(org, hour)] = sent{customer, value, hour.Add(time.Hour - time.Second)}
	}
	s := open()
	pass := func(s *Stripe, at time.Time) error {
		t.Helper()
		clock.Set(at)
		return s.ReportNow(context.Background())
	}
	check := func(step string) {
		t.Helper()
		got := map[string]sent{}
		for _, m := range rec.sent() {
			if _, dup := got[m.identifier]; dup {
				t.Fatalf("%s: %s sent twice", step, m.identifier)
			}
			if m.eventName != "tollgate_egress_overage" {
				t.Fatalf("%s: event_name %q", step, m.eventName)
			}
			var ts int64
			fmt.Sscan(m.timestamp, &ts)
			got[m.identifier] = sent{m.customer, m.value, time.Unix(ts, 0).UTC()}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: sent\n%v\nwant\n%v", step, got, want)
		}
	}

	// At 12:03 the hours that ended by 11:58 (report_delay 5m) are due:
	// through 10:00-11:00. The cursor starts at March 1.
	if err := pass(s, day(10, 12).Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	expect("acme", "cus_acme", day(5, 10), "150")
	expect("acme", "cus_acme", day(6, 0), "100")
	expect("acme", "cus_acme", day(10, 10), "50")
	expect("delta", "cus_delta", day(3, 7), "1500")
	check("first pass")
	if s.Pending() != 0 {
		t.Fatalf("pending %d", s.Pending())
	}
	// Nothing new until an hour is due; then only that hour.
	if err := pass(s, day(10, 12).Add(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("same hour")
	if err := pass(s, day(10, 13).Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	expect("acme", "cus_acme", day(10, 11), "999")
	check("next hour")

	// Stripe down: the overage stays pending, across passes.
	sm.Stop()
	usage.add("acme", day(10, 13), 10)
	usage.add("delta", day(10, 13), 20)
	if err := pass(s, day(10, 14).Add(5*time.Minute)); err == nil {
		t.Fatal("pass with Stripe down: no error")
	} else {
		t.Logf("pass with Stripe down: %v", err)
	}
	if err := pass(s, day(10, 14).Add(30*time.Minute)); err == nil {
		t.Fatal("second pass with Stripe down: no error")
	}
	if s.Pending() != 2 || rec.failures() == 0 {
		t.Fatalf("pending %d, failures %d; want 2 pending after failures", s.Pending(), rec.failures())
	}
	check("Stripe down")
	if n := testutil.ToFloat64(s.retry); n < 1 {
		t.Fatalf("retries counted %v", n)
	}

	// A restart of tollgate (a new Stripe on the same store) and of Stripe:
	// the pending events are sent once their retry is due.
	_ = s.Close()
	s = open()
	if s.Pending() != 2 {
		t.Fatalf("pending after a restart: %d", s.Pending())
	}
	sm.Restart()
	if err := pass(s, day(10, 17)); err != nil {
		t.Fatal(err)
	}
	expect("acme", "cus_acme", day(10, 13), "10")
	expect("delta", "cus_delta", day(10, 13), "20")
	check("after the restarts")
	if s.Pending() != 0 || testutil.ToFloat64(s.sent) != 2 {
		t.Fatalf("pending %d, sent %v", s.Pending(), testutil.ToFloat64(s.sent))
	}

	// The period ends: March's last hour is reported in April, and April
	// starts from zero.
	usage.add("acme", day(31, 23), 5)
	usage.add("acme", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), 1200)
	if err := pass(s, time.Date(2026, 4, 1, 1, 10, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	expect("acme", "cus_acme", day(31, 23), "5")
	expect("acme", "cus_acme", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), "200")
	check("new period")
}

func TestStripeRun(t *testing.T) {
	sm := stripetest.Start(t)
	rec := newMeterRecorder()
	acc := newStripeAccounts()
	acc.set(sites.Org{ID: "acme", Plan: "metered", State: sites.StateActive, StripeCustomer: "cus_acme"}, 100)
	usage := &stripeUsage{}
	hour := time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)
	usage.add("acme", hour, 150)
	clock := clocktest.New(hour.Add(2 * time.Hour))
	s := newTestStripe(t, billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test",
		APIBase: sm.URL(), ReportInterval: 20 * time.Millisecond},
		Options{Accounts: acc, Store: storetest.Open(t), Usage: usage, Now: clock.Now,
			HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(context.Background())
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(rec.sent()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run sent nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if got := rec.sent(); len(got) != 1 || got[0].identifier != meterIdentifier("acme", hour) || got[0].value != "50" {
		t.Fatalf("sent %+v", got)
	}
	s.Run(context.Background()) // after Close: returns at once
}

// TestStripeMeterRejected: an event Stripe rejects (4xx) is kept and
// retried without holding up the others, and dropped once too old for
// Stripe to accept.
func TestStripeMeterRejected(t *testing.T) {
	var mu sync.Mutex
	var ok []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id := r.PostForm.Get("identifier")
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(id, "-acme-") {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"type":"invalid_request_error","message":"No such customer: 'cus_acme'"}}`)
			return
		}
		mu.Lock()
		ok = append(ok, id)
		mu.Unlock()
		_, _ = io.WriteString(w, `{"object":"billing.meter_event","identifier":"`+id+`"}`)
	}))
	t.Cleanup(api.Close)
	acc := newStripeAccounts()
	acc.set(sites.Org{ID: "acme", Plan: "metered", State: sites.StateActive, StripeCustomer: "cus_acme"}, 100)
	acc.set(sites.Org{ID: "delta", Plan: "metered", State: sites.StateActive, StripeCustomer: "cus_delta"}, 100)
	usage := &stripeUsage{}
	hour := time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)
	usage.add("acme", hour, 150)
	usage.add("delta", hour, 170)
	clock := clocktest.New(hour.Add(2 * time.Hour))
	s := newTestStripe(t, billing.StripeConfig{SecretKey: "sk_test_123", WebhookSecret: stripeTestSecret, WebhookHost: "billing.test", APIBase: api.URL},
		Options{Accounts: acc, Store: storetest.Open(t), Usage: usage, Now: clock.Now})

	err := s.ReportNow(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP 400 invalid_request_error: No such customer") {
		t.Fatalf("pass: %v", err)
	}
	mu.Lock()
	sentIDs := slices.Clone(ok)
	mu.Unlock()
	if len(sentIDs) != 1 || sentIDs[0] != meterIdentifier("delta", hour) {
		t.Fatalf("sent %v: the rejected event held up the others", sentIDs)
	}
	if s.Pending() != 1 || testutil.ToFloat64(s.retry) != 1 {
		t.Fatalf("pending %d, retries %v", s.Pending(), testutil.ToFloat64(s.retry))
	}
	// Not due again at once: backoff.
	if err := s.ReportNow(context.Background()); err != nil || testutil.ToFloat64(s.retry) != 1 {
		t.Fatalf("second pass: %v, retries %v", err, testutil.ToFloat64(s.retry))
	}
	// 36 days later Stripe would not take it any more.
	clock.Set(hour.Add(36 * 24 * time.Hour))
	if err := s.ReportNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.Pending() != 0 || testutil.ToFloat64(s.dropped) != 1 {
		t.Fatalf("pending %d, dropped %v", s.Pending(), testutil.ToFloat64(s.dropped))
	}
}
