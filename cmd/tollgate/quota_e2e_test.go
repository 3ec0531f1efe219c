package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// quotaConf binds storage and plan limits within seconds: the storage walk
// every second, evaluations every 100 ms, graces of 2 s.
const quotaConf = `[sites]
storage_interval = "1s"
[meter]
flush_interval = "100ms"
[billing]
enforce_interval = "100ms"
storage_grace = "2s"
downgrade_grace = "2s"
[[billing.plans]]
name = "tiny"
rank = 1
storage_bytes = 10000
sites = 1
domains = 1
[[billing.plans]]
name = "roomy"
rank = 2
storage_bytes = 10000000
sites = 10
domains = 10
`

// reasonOf fetches / of host and returns the status and Tollgate-Reason.
func (in *instance) reasonOf(t *testing.T, host string) (int, string) {
	t.Helper()
	resp, _ := in.get(t, host, "/")
	return resp.StatusCode, resp.Header.Get("Tollgate-Reason")
}

// TestStorageQuotaE2E: a dir site storing more than its plan allows is
// served through storage_grace, then answers 429 STORAGE_QUOTA_EXCEEDED;
// an upgrade serves it again at once; files removed on the small plan too.
func TestStorageQuotaE2E(t *testing.T) {
	dir := t.TempDir()
	in := startTollgateConf(t, dir, "", quotaConf)
	defer in.stop(t)
	site := in.siteDir(t, "hello")
	big := filepath.Join(site, "big.bin")
	if err := os.WriteFile(big, bytes.Repeat([]byte("z"), 50_000), 0o644); err != nil {
		t.Fatal(err)
	}
	in.addSite(t, "acme", "tiny", site, "www.acme.test")
	if s, r := in.reasonOf(t, "www.acme.test"); s != http.StatusOK {
		t.Fatalf("within the grace: %d %s", s, r)
	}
	waitFor(t, func() bool { s, r := in.reasonOf(t, "www.acme.test"); return s == 429 && r == "STORAGE_QUOTA_EXCEEDED" })
	if _, body := in.get(t, "www.acme.test", "/"); !strings.Contains(body, "stores more than their plan includes") {
		t.Fatalf("the storage page: %q", body)
	}
	if out, code := in.cli(t, "org", "set", "acme", "--plan", "roomy", "--force"); code != 0 {
		t.Fatalf("upgrade: %s", out)
	}
	if s, r := in.reasonOf(t, "www.acme.test"); s != http.StatusOK {
		t.Fatalf("right after the upgrade: %d %s", s, r)
	}
	setPlan(t, in, "acme", "tiny")
	waitFor(t, func() bool { s, _ := in.reasonOf(t, "www.acme.test"); return s == 429 })
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s, _ := in.reasonOf(t, "www.acme.test"); return s == http.StatusOK })
	// Over, then (after the upgrade and back, possibly within one pass)
	// within again once the files are gone.
	out, code := in.cli(t, "--json", "org", "events", "acme")
	if code != 0 || strings.Count(out, `"storage_quota"`) < 2 || !strings.Contains(out, `storing 5 bytes, plan \"tiny\" allows 10000`) {
		t.Fatalf("org events: %s", out)
	}
}

// setPlan moves org to plan as the operator, whatever the direction.
func setPlan(t *testing.T, in *instance, org, plan string) {
	t.Helper()
	if out, code := in.cli(t, "org", "set", org, "--plan", plan, "--force"); code != 0 {
		t.Fatalf("plan %s: %s", plan, out)
	}
}

// TestDowngradeE2E: an org of three sites moved to a one-site plan has all
// three served through downgrade_grace, then exactly one (the oldest, until
// another is marked active) while the others answer 402 UPGRADE_REQUIRED;
// an upgrade serves all three at once.
func TestDowngradeE2E(t *testing.T) {
	dir := t.TempDir()
	in := startTollgateConf(t, dir, "", quotaConf)
	defer in.stop(t)
	in.addSite(t, "acme", "roomy", in.siteDir(t, "one"), "one.acme.test")
	for _, s := range []string{"two", "three"} {
		for _, step := range [][]string{{"site", "create", "acme", s, "--dir", in.siteDir(t, s)}, {"domain", "add", s, s + ".acme.test"}} {
			if out, code := in.cli(t, step...); code != 0 {
				t.Fatalf("%v: %s", step, out)
			}
		}
	}
	hosts := []string{"one.acme.test", "two.acme.test", "three.acme.test"}
	served := func() (n int, refused []string) {
		for _, h := range hosts {
			switch s, r := in.reasonOf(t, h); {
			case s == http.StatusOK:
				n++
			case s == http.StatusPaymentRequired && r == "UPGRADE_REQUIRED":
				refused = append(refused, h)
			default:
				t.Fatalf("%s: %d %s", h, s, r)
			}
		}
		return n, refused
	}
	setPlan(t, in, "acme", "tiny")
	if out, _ := in.cli(t, "--json", "org", "get", "acme"); !strings.Contains(out, `"over_plan"`) {
		t.Fatalf("over_plan not reported at once: %s", out)
	}
	if n, _ := served(); n != 3 {
		t.Fatalf("%d sites served within the grace, want 3", n)
	}
	waitFor(t, func() bool { n, _ := served(); return n == 1 })
	if _, refused := served(); strings.Join(refused, ",") != "two.acme.test,three.acme.test" {
		t.Fatalf("refused %v: the oldest site must be kept", refused)
	}
	if out, code := in.cli(t, "site", "set", "three", "--active", "true"); code != 0 {
		t.Fatalf("marking: %s", out)
	}
	if _, refused := served(); strings.Join(refused, ",") != "one.acme.test,two.acme.test" {
		t.Fatalf("refused %v after marking three active", refused)
	}
	setPlan(t, in, "acme", "roomy")
	if n, _ := served(); n != 3 {
		t.Fatalf("%d sites served right after the upgrade, want 3", n)
	}
}

// getFrom sends GET / for host to in's plain listener from local address
// src (a loopback address of its own, so it counts as another client).
func (in *instance) getFrom(t *testing.T, src, host string) (int, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext, DisableKeepAlives: true}}
	req, _ := http.NewRequest("GET", "http://"+in.http+"/", nil)
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Tollgate-Reason")
}

// TestPerIPRateLimitE2E: on the built binary, a client flooding one site
// past [limits] per_ip_rps gets 429 RATE_LIMITED with Retry-After while
// another client of the same site is served.
func TestPerIPRateLimitE2E(t *testing.T) {
	dir := t.TempDir()
	in := startTollgateConf(t, dir, "", "[limits]\nper_ip_rps = 2\nper_ip_burst = 4\n")
	defer in.stop(t)
	in.addSite(t, "acme", "free", in.siteDir(t, "hello"), "www.acme.test")
	refused, start := 0, time.Now()
	for range 20 {
		switch s, r := in.getFrom(t, "127.0.0.2", "www.acme.test"); {
		case s == http.StatusTooManyRequests && r == "RATE_LIMITED":
			refused++
		case s != http.StatusOK:
			t.Fatalf("flooding client: %d %s", s, r)
		}
	}
	// A burst of 4 refilled at 2 a second serves at most 4 + 2 per second
	// taken (+1 for a token refilled mid-way).
	maxServed := 5 + int(2*time.Since(start).Seconds())
	if served := 20 - refused; served > maxServed || refused == 0 {
		t.Fatalf("%d of 20 served in %v, want at most %d", served, time.Since(start), maxServed)
	}
	if s, r := in.getFrom(t, "127.0.0.3", "www.acme.test"); s != http.StatusOK {
		t.Fatalf("another client of the same site: %d %s", s, r)
	}
}

// TestTrialEndsE2E: on the built binary, an org created on a plan with a
// trial is trialing; the operator moves the trial's end two seconds ahead;
// trial.ending and trial.ended reach a real receiver once each and the org
// ends on the default plan, active.
func TestTrialEndsE2E(t *testing.T) {
	hooks := newHookReceiver(t)
	dir := t.TempDir()
	in := startTollgateConf(t, dir, "", fmt.Sprintf(`[billing]
enforce_interval = "100ms"
trial_ending_notice = "1s"
[[billing.plans]]
name = "pro"
rank = 2
trial_days = 14
[[billing.hooks]]
url = %q
secret = %q
`, hooks.URL, e2eHookSecret))
	defer in.stop(t)
	if out, code := in.cli(t, "--json", "org", "create", "acme", "--plan", "pro"); code != 0 || !strings.Contains(out, `"trialing"`) || !strings.Contains(out, `"trial_ends_at"`) {
		t.Fatalf("org on a trial plan: %d %s", code, out)
	}
	if out, code := in.cli(t, "org", "set", "acme", "--trial-ends", "2s"); code != 0 {
		t.Fatalf("moving the trial's end: %s", out)
	}
	hooks.waitFor(t, "trial.ending")
	hooks.waitFor(t, "trial.ended")
	out, code := in.cli(t, "--json", "org", "get", "acme")
	if code != 0 || !strings.Contains(out, `"plan": "free"`) || !strings.Contains(out, `"state": "active"`) || strings.Contains(out, "trial_ends_at") {
		t.Fatalf("after the trial: %s", out)
	}
	time.Sleep(500 * time.Millisecond) // five more passes: nothing fires twice
	if hooks.count("trial.ending") != 1 || hooks.count("trial.ended") != 1 {
		t.Fatalf("trial.ending ×%d, trial.ended ×%d; want 1 each", hooks.count("trial.ending"), hooks.count("trial.ended"))
	}
	if out, code := in.cli(t, "org", "set", "acme", "--trial-ends", "72h"); code == 0 || !strings.Contains(out, "not trialing") {
		t.Fatalf("moving the trial of an org that is not trialing: %d %s", code, out)
	}
}
