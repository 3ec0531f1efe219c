package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
)

const (
	e2eHookSecret    = "hook-secret-0123456789abcdef"
	e2eWebhookSecret = "whsec_e2e_0123456789"
	webhookHost      = "billing.test"
)

// hookReceiver is a real HTTP server collecting lifecycle hooks.
type hookReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	types []string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e struct{ Type string }
		json.NewDecoder(r.Body).Decode(&e)
		h.mu.Lock()
		h.types = append(h.types, e.Type)
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) count(typ string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, x := range h.types {
		if x == typ {
			n++
		}
	}
	return n
}

func (h *hookReceiver) waitFor(t *testing.T, typ string) {
	t.Helper()
	waitFor(t, func() bool { return h.count(typ) > 0 })
}

// billingConf is the [meter] and [billing] configuration of the billing
// end-to-end tests: fast flushes and evaluations, a small plan and a big
// one ranked above it.
func billingConf(hooks, stripeURL string) string {
	return fmt.Sprintf(`[meter]
flush_interval = "100ms"
[billing]
enforce_interval = "100ms"
[[billing.plans]]
name = "small"
egress_bytes = 400000
throttle_bps = 200000
hard_limit_percent = 400
grace_period = "1s"
rank = 1
[[billing.plans]]
name = "big"
egress_bytes = 1000000000
grace_period = "1s"
rank = 2
[[billing.hooks]]
url = %q
secret = %q
[billing.stripe]
secret_key = "sk_test_123"
webhook_secret = %q
webhook_host = %q
api_base = %q
`, hooks, e2eHookSecret, e2eWebhookSecret, webhookHost, stripeURL)
}

// download fetches path from host and returns the bytes read, the time it
// took and the status.
func (in *instance) download(t *testing.T, host, path string) (int, time.Duration, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+in.http+path, nil)
	req.Host = host
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	return int(n), time.Since(start), resp.StatusCode
}

// stripeEvent posts a signed Stripe event to tollgate's public webhook.
func (in *instance) stripeEvent(t *testing.T, id, typ string, created time.Time, object string) int {
	t.Helper()
	body := fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2023-10-16","created":%d,"type":%q,"data":{"object":%s}}`,
		id, created.Unix(), typ, object)
	signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(body), Secret: e2eWebhookSecret, Timestamp: time.Now()})
	req, _ := http.NewRequest("POST", "http://"+in.http+"/stripe/webhook", bytes.NewReader(signed.Payload))
	req.Host = webhookHost
	req.Header.Set("Stripe-Signature", signed.Header)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Logf("stripe %s → %d %s", typ, resp.StatusCode, b)
	}
	return resp.StatusCode
}

func subscription(customer, status, lookupKey string) string {
	return fmt.Sprintf(`{"id":"sub_1","object":"subscription","customer":%q,"status":%q,"items":{"object":"list","data":[{"id":"si_1","object":"subscription_item","price":{"id":"price_1","object":"price","lookup_key":%q}}]}}`,
		customer, status, lookupKey)
}

// TestBillingMonth is the scripted month through the real binary:
// warning at 80 %, throttled at 100 % (measured bandwidth within 10 % of
// throttle_bps), blocked at the hard limit (429), upgraded by a signed
// Stripe event (full speed again within two flush intervals), payment
// failure → grace → expiry (402) → payment → restored; hooks arrive signed
// at a real receiver.
func TestBillingMonth(t *testing.T) {
	sm := stripetest.Start(t)
	hooks := newHookReceiver(t)
	dir := t.TempDir()
	siteDir := filepath.Join(dir, "site")
	os.MkdirAll(siteDir, 0o755)
	os.WriteFile(filepath.Join(siteDir, "chunk.bin"), bytes.Repeat([]byte("x"), 50_000), 0o644)
	os.WriteFile(filepath.Join(siteDir, "big.bin"), bytes.Repeat([]byte("y"), 600_000), 0o644)
	in := startTollgateConf(t, dir, "", billingConf(hooks.URL, sm.URL()))
	defer in.stop(t)
	in.addSite(t, "acme", "small", siteDir, "www.acme.test")
	if out, code := in.cli(t, "org", "set", "acme", "--stripe-customer", "cus_acme"); code != 0 {
		t.Fatalf("linking the Stripe customer: %s", out)
	}

	// 80 %: a warning.
	for total := 0; total < 330_000; {
		n, _, status := in.download(t, "www.acme.test", "/chunk.bin")
		if status != 200 {
			t.Fatalf("status %d before the quota", status)
		}
		total += n
	}
	hooks.waitFor(t, "quota.warning")
	// 100 %: throttled to 200 kB/s.
	for range 2 {
		in.download(t, "www.acme.test", "/chunk.bin")
	}
	hooks.waitFor(t, "org.throttled")
	n, took, status := in.download(t, "www.acme.test", "/big.bin")
	rate := float64(n) / took.Seconds()
	t.Logf("throttled download: %d bytes in %v = %.0f B/s (throttle_bps 200000)", n, took, rate)
	if status != 200 || rate < 180_000 || rate > 220_000 {
		t.Fatalf("throttled bandwidth %.0f B/s (status %d), want 200000 ± 10 %%", rate, status)
	}
	// Past 400 %: blocked with 429.
	for range 2 {
		in.download(t, "www.acme.test", "/big.bin")
	}
	hooks.waitFor(t, "org.blocked")
	waitFor(t, func() bool { _, _, s := in.download(t, "www.acme.test", "/chunk.bin"); return s == 429 })

	// An upgrade through Stripe: full speed within two flush intervals.
	now := time.Now()
	if code := in.stripeEvent(t, "evt_up", "customer.subscription.updated", now, subscription("cus_acme", "active", "big")); code != 200 {
		t.Fatalf("subscription event: %d", code)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for {
		_, took, status := in.download(t, "www.acme.test", "/big.bin")
		if status == 200 && took < time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not at full speed after the upgrade: %d in %v", status, took)
		}
	}

	// Payment failure → served during the grace period (1s) → expired
	// (402) → paid → restored.
	if code := in.stripeEvent(t, "evt_fail", "invoice.payment_failed", now.Add(time.Second), `{"id":"in_1","object":"invoice","customer":"cus_acme"}`); code != 200 {
		t.Fatalf("payment_failed: %d", code)
	}
	if _, _, s := in.download(t, "www.acme.test", "/chunk.bin"); s != 200 {
		t.Fatalf("during the grace period: %d", s)
	}
	hooks.waitFor(t, "grace.started")
	hooks.waitFor(t, "org.expired")
	waitFor(t, func() bool { _, _, s := in.download(t, "www.acme.test", "/chunk.bin"); return s == 402 })
	_, body := in.get(t, "www.acme.test", "/chunk.bin")
	if !strings.Contains(body, "paused") {
		t.Fatalf("402 page: %q", body)
	}
	if code := in.stripeEvent(t, "evt_paid", "invoice.paid", now.Add(2*time.Second), `{"id":"in_1","object":"invoice","customer":"cus_acme"}`); code != 200 {
		t.Fatalf("invoice.paid: %d", code)
	}
	if _, _, s := in.download(t, "www.acme.test", "/chunk.bin"); s != 200 {
		t.Fatalf("after payment: %d", s)
	}
	hooks.waitFor(t, "payment.succeeded")
	hooks.waitFor(t, "org.restored")
	// A replayed event changes nothing.
	if code := in.stripeEvent(t, "evt_fail", "invoice.payment_failed", now.Add(time.Second), `{"id":"in_1","object":"invoice","customer":"cus_acme"}`); code != 200 {
		t.Fatalf("replay: %d", code)
	}
	if _, _, s := in.download(t, "www.acme.test", "/chunk.bin"); s != 200 {
		t.Fatalf("a replayed payment failure blocked the org: %d", s)
	}
	out, code := in.cli(t, "--json", "org", "events", "acme")
	if code != 0 || !strings.Contains(out, `"past_due"`) || !strings.Contains(out, `"expired"`) {
		t.Fatalf("org events: %s", out)
	}
}

// TestTwoNodesEnforceTogether: two nodes on one Redis see the org's
// combined traffic; both block it once it crosses the hard limit, and the
// overshoot is bounded by what was served in two flush intervals.
func TestTwoNodesEnforceTogether(t *testing.T) {
	rs := redistest.Start(t)
	var nodes []*instance
	siteDir := filepath.Join(t.TempDir(), "site")
	os.MkdirAll(siteDir, 0o755)
	os.WriteFile(filepath.Join(siteDir, "chunk.bin"), bytes.Repeat([]byte("x"), 20_000), 0o644)
	for range 2 {
		dir := t.TempDir()
		in := startTollgateConf(t, dir, fmt.Sprintf("redis = %q", "redis://"+rs.Addr()), `[meter]
flush_interval = "100ms"
[billing]
enforce_interval = "100ms"
[[billing.plans]]
name = "capped"
egress_bytes = 300000
hard_limit_percent = 100
`)
		defer in.stop(t)
		nodes = append(nodes, in)
	}
	// One registry in Redis: registered once, served by both nodes.
	nodes[0].addSite(t, "acme", "capped", siteDir, "www.acme.test")
	waitFor(t, func() bool { _, _, s := nodes[1].download(t, "www.acme.test", "/chunk.bin"); return s == 200 })
	served := 0
	start := time.Now()
	var crossed time.Time // when the combined traffic passed the quota
	for i := 0; ; i++ {
		n, _, status := nodes[i%2].download(t, "www.acme.test", "/chunk.bin")
		if status == 429 {
			break
		}
		served += n
		if served >= 300_000 && crossed.IsZero() {
			crossed = time.Now()
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("never blocked")
		}
	}
	lag := time.Since(crossed)
	// Both nodes block now.
	for i, in := range nodes {
		waitFor(t, func() bool { _, _, s := in.download(t, "www.acme.test", "/chunk.bin"); return s == 429 })
		t.Logf("node %d blocks", i)
	}
	t.Logf("served %d body bytes against a 300000-byte quota; blocked %v after crossing it", served, lag)
	if served < 300_000-20_000 {
		t.Fatalf("blocked after %d bytes, before the quota", served)
	}
	// The overshoot is what the nodes served between crossing the quota and
	// the block: at most two flush intervals and one evaluation (300 ms
	// here), plus scheduling slack on a loaded test machine.
	if lag > 600*time.Millisecond {
		t.Fatalf("blocked %v after crossing the quota; want within 2 flush intervals + 1 evaluation", lag)
	}
}
