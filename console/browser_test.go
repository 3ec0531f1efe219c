package console_test

import (
	"bytes"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

	f := newFixture(t)
	// The test server's certificate is self-signed: the cookie is Secure,
	// so the console must be on https.
	c := startChromium(t, bin, filepath.Join(t.TempDir(), "profile"), "--ignore-certificate-errors",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
	base := f.srv.URL
	shot := func(name string) {
		t.Helper()
		b := c.screenshot(filepath.Join(artifacts, name+".png"))
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil || img.Bounds().Dx() < 500 {
			t.Fatalf("screenshot %s: %v", name, err)
		}
	}
	expect := func(what, expr, want string) {
		t.Helper()
		if got := c.eval(expr); got != want {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}

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
