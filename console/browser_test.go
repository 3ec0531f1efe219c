package console_test

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/console"
	"github.com/tollgate-edge/tollgate/credit"
)

// TestBrowserConsole drives headless Chromium (Debian chromium) through
// the console over the DevTools protocol on a pipe: it signs in with a
// token typed into the form, reads the usage chart (31 bars, its title),
// adds a domain on the sites page and reads the DNS records on the page
// it lands on, then creates the TXT record in the test's DNS server and
// attaches the domain with the page's button. Forms are filled and sent
// by the test's probe; the pages themselves run no script. Every page
// must report no console error, exception or error log entry (CSP
// violations included). Screenshots of each step are kept under
// $TOLLGATE_ARTIFACTS, or a new directory under the system's temporary
// directory; the test logs where. Chromium is a declared dependency (make
// chromium): missing, the test fails; under -short it is skipped.
func TestBrowserConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("needs chromium; -short")
	}
	f := newFixture(t)
	c, base, shot, expect := startBrowser(t, f)

	c.navigate(base + "/console/")
	expect("unsigned visit lands on", "location.pathname", "/console/signin")
	shot("1-signin")
	c.submit(`document.getElementById('token').value = '` + tokWrite + `'; document.querySelector('main form').submit()`)
	expect("after sign-in", "location.pathname", "/console/")
	expect("org", "document.getElementById('org').textContent", "acme")
	expect("decision", "document.getElementById('decision').textContent.trim().startsWith('Allowed')", "true")
	expect("cookie hidden from scripts", "document.cookie", "")
	shot("2-overview")

	c.navigate(base + "/console/usage?period=2025-03")
	expect("chart bars", "document.querySelectorAll('#usage-chart rect.bar').length", "31")
	expect("chart title", "document.getElementById('chart-title').textContent", "Egress per day, 2025-03")
	expect("busiest bar", "document.querySelectorAll('#usage-chart rect.bar')[16].querySelector('title').textContent",
		"2025-03-17: 11.7 KiB egress, 10 requests")
	expect("chart drawn", "document.getElementById('usage-chart').getBoundingClientRect().width > 600", "true")
	shot("3-usage")

	c.navigate(base + "/console/sites")
	c.submit(`document.getElementById('site').value = 'web'; document.getElementById('domain').value = 'shop.acme.test'; document.querySelector('main form').submit()`)
	expect("domain page", "location.pathname + location.search", "/console/domains/shop.acme.test?site=web")
	expect("state", "document.getElementById('domain-state').textContent", "waiting for DNS")
	expect("records", `[...document.querySelectorAll('#dns-records tbody tr')].map(r => [...r.cells].slice(0, 3).map(c => c.textContent).join(' ')).join('; ')`,
		"CNAME shop.acme.test "+cnameHost+"; TXT _tollgate.shop.acme.test web")
	shot("4-domain-pending")

	f.dns.SetTXT("_tollgate.shop.acme.test", "web")
	c.submit(`document.querySelector('main form').submit()`)
	expect("state after DNS", "document.getElementById('domain-state').textContent", "verified")
	shot("5-domain-verified")
	if d, err := f.reg.Domain("shop.acme.test"); err != nil || d.Via != "dns-txt" {
		t.Errorf("registry: %+v %v", d, err)
	}

	if len(c.errors) > 0 {
		t.Errorf("the console reported errors:\n%s", strings.Join(c.errors, "\n"))
	}
}

// TestBrowserTopUp drives headless Chromium through the credit page's
// top-up form (token with the billing scope, top-ups on stripe-mock): an
// amount with three decimals is shown back with the reason, on a page
// that reports no other console error (CSP included). The redirect to Stripe is
// TestCreditTopUp's: Chromium here resolves no outside name.
func TestBrowserTopUp(t *testing.T) {
	if testing.Short() {
		t.Skip("needs chromium; -short")
	}
	f, _, rec := newTopUpFixture(t)
	c, base, shot, expect := startBrowser(t, f)
	c.navigate(base + "/console/signin")
	c.submit(`document.getElementById('token').value = '` + tokAdmin + `'; document.querySelector('main form').submit()`)
	c.navigate(base + "/console/credit")
	expect("top-up form", "document.getElementById('top-up-form') !== null", "true")
	shot("top-up-1-form")
	c.submit(`document.getElementById('amount').value = '12.345'; document.getElementById('top-up-form').submit()`)
	expect("error", "document.getElementById('top-up-error').textContent", "Write the amount as a number with up to two decimals, such as 25 or 25.50.")
	expect("amount kept", "document.getElementById('amount').value", "12.345")
	expect("balance", "document.getElementById('credit-balance').textContent", "Balance: 37.66 EUR")
	shot("top-up-2-error")
	if forms := rec.take(); len(forms) != 0 {
		t.Errorf("a refused amount asked Stripe for %d sessions", len(forms))
	}
	// The refusal's own 400 is logged by Chromium; nothing else may be.
	var errs []string
	for _, e := range c.errors {
		if !strings.Contains(e, "status of 400") || !strings.Contains(e, "/console/credit/top-up") {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		t.Errorf("the console reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// startBrowser starts Chromium for f's console and returns it, the
// console's base URL, a function that keeps a screenshot of the page and
// one that checks an expression's value in it. Screenshots are kept under
// $TOLLGATE_ARTIFACTS, or a new directory under the system's temporary
// directory; the test logs where.
func startBrowser(t *testing.T, f *fixture) (c *cdp, base string, shot func(name string), expect func(what, expr, want string)) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs chromium; -short")
	}
	bin := os.Getenv("CHROMIUM_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("chromium"); err != nil {
			t.Fatal("missing chromium (Debian chromium): run `make chromium`")
		}
	}
	artifacts := os.Getenv("TOLLGATE_ARTIFACTS")
	if artifacts == "" {
		var err error
		if artifacts, err = os.MkdirTemp("", "console-browser-"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", artifacts)
	// The test server's certificate is self-signed: the cookie is Secure,
	// so the console must be on https.
	c = startChromium(t, bin, filepath.Join(t.TempDir(), "profile"), "--ignore-certificate-errors",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
	shot = func(name string) {
		t.Helper()
		b := c.screenshot(filepath.Join(artifacts, name+".png"))
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil || img.Bounds().Dx() < 500 {
			t.Fatalf("screenshot %s: %v", name, err)
		}
	}
	expect = func(what, expr, want string) {
		t.Helper()
		if got := c.eval(expr); got != want {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	return c, f.srv.URL, shot, expect
}

// TestBrowserRedeem: in Chromium, a tenant types a credit code in lower
// case on the credit page: the page that follows names it and shows the
// new balance; the same code again shows why it is refused.
func TestBrowserRedeem(t *testing.T) {
	var bill *billing.Billing
	f := newFixtureWith(t, func(o *console.Options, b *billing.Billing) { o.Codes, bill = b, b })
	if _, err := bill.CreateCode(context.Background(), credit.Code{Code: "WELCOME-10", Amount: 1000}); err != nil {
		t.Fatal(err)
	}
	c, base, shot, expect := startBrowser(t, f)
	c.navigate(base + "/console/signin")
	c.submit(`document.getElementById('token').value = '` + tokAdmin + `'; document.querySelector('main form').submit()`)
	c.navigate(base + "/console/credit")
	expect("redeem form", "document.getElementById('redeem-form') !== null", "true")
	c.submit(`document.getElementById('code').value = 'welcome-10'; document.getElementById('redeem-form').submit()`)
	expect("notice", "document.getElementById('redeemed').textContent", "Code WELCOME-10 redeemed: its credit is in the balance above.")
	expect("balance", "document.getElementById('credit-balance').textContent", "Balance: 47.66 EUR")
	shot("redeem-1-done")
	c.submit(`document.getElementById('code').value = 'WELCOME-10'; document.getElementById('redeem-form').submit()`)
	expect("refusal", "document.getElementById('redeem-error').textContent", "This organization has redeemed this code already.")
	expect("balance unchanged", "document.getElementById('credit-balance').textContent", "Balance: 47.66 EUR")
	shot("redeem-2-again")
	var errs []string
	for _, e := range c.errors { // the refusal's own 409 is logged by Chromium; nothing else may be
		if !strings.Contains(e, "status of 409") || !strings.Contains(e, "/console/credit/redeem") {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		t.Errorf("the console reported errors:\n%s", strings.Join(errs, "\n"))
	}
}
