package console_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func TestSignIn(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, token string
		hdr         map[string]string
		status      int
		want        string
	}{
		{"valid", tokRead, nil, http.StatusSeeOther, ""},
		{"unknown", "tg_nope", nil, http.StatusUnauthorized, "This token is not valid"},
		{"revoked", tokRevoked, nil, http.StatusUnauthorized, "has been revoked"},
		{"expired", tokExpired, nil, http.StatusUnauthorized, "has expired"},
		{"empty", "", nil, http.StatusBadRequest, "Enter your token"},
		{"foreign origin", tokRead, map[string]string{"Origin": "https://evil.test", "Sec-Fetch-Site": ""}, http.StatusForbidden, "sent from another site"},
		{"cross-site fetch", tokRead, map[string]string{"Origin": "", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden, "sent from another site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := f.browser(t)
			resp, body := b.do(http.MethodPost, "/console/signin", url.Values{"token": {tc.token}}, tc.hdr)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("status %d, want %d with %q:\n%s", resp.StatusCode, tc.status, tc.want, body)
			}
			if tc.token != "" && strings.Contains(body, tc.token) {
				t.Error("the token is rendered back")
			}
			cookies := resp.Cookies()
			if tc.status != http.StatusSeeOther {
				if len(cookies) != 0 {
					t.Errorf("a failed sign-in set cookies %v", cookies)
				}
				return
			}
			if len(cookies) != 1 {
				t.Fatalf("cookies %v, want one", cookies)
			}
			ck := cookies[0]
			if !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/console/" || ck.MaxAge <= 0 {
				t.Errorf("cookie %q lacks HttpOnly, Secure, SameSite=Strict, Path=/console/ or Max-Age", resp.Header.Get("Set-Cookie"))
			}
			if strings.Contains(ck.Value, tc.token) || len(ck.Value) < 40 {
				t.Errorf("cookie value %q is not a random session id", ck.Value)
			}
			if loc := resp.Header.Get("Location"); loc != "/console/" {
				t.Errorf("redirect to %q", loc)
			}
			if resp, body := b.get("/console/"); resp.StatusCode != 200 || !strings.Contains(body, `id="org">acme<`) {
				t.Errorf("overview after sign-in: %d\n%s", resp.StatusCode, body)
			}
		})
	}
}

func TestSessionEnds(t *testing.T) {
	f := newFixture(t)
	t.Run("revoked token", func(t *testing.T) {
		b := f.browser(t)
		b.signIn(tokAdmin)
		f.tokens.revoke(tokAdmin)
		resp, _ := b.get("/console/")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/signin" {
			t.Fatalf("after revocation: %d %q, want a redirect to sign-in", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("sign out", func(t *testing.T) {
		b := f.browser(t)
		csrf := b.signIn(tokRead)
		resp, _ := b.do(http.MethodPost, "/console/signout", url.Values{"csrf": {csrf}}, nil)
		if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
			t.Fatalf("sign-out: %d %q", resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
		if resp, _ := b.get("/console/usage"); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("after sign-out: %d, want a redirect to sign-in", resp.StatusCode)
		}
	})
	t.Run("no session", func(t *testing.T) {
		resp, body := f.browser(t).do(http.MethodPost, "/console/domains", url.Values{"site": {"web"}, "domain": {"a.test"}}, nil)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not signed in") {
			t.Errorf("post without a session: %d\n%s", resp.StatusCode, body)
		}
	})
}

func TestCSRF(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	csrf := b.signIn(tokAdmin)
	form := func(token string) url.Values {
		return url.Values{"csrf": {token}, "site": {"web"}, "domain": {"csrf.acme.test"}}
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		hdr    map[string]string
		status int
	}{
		{"no token", url.Values{"site": {"web"}, "domain": {"csrf.acme.test"}}, nil, http.StatusForbidden},
		{"wrong token", form(csrf[:len(csrf)-1] + "x"), nil, http.StatusForbidden},
		{"foreign origin", form(csrf), map[string]string{"Origin": "https://evil.test", "Sec-Fetch-Site": ""}, http.StatusForbidden},
		{"null origin", form(csrf), map[string]string{"Origin": "null", "Sec-Fetch-Site": ""}, http.StatusForbidden},
		{"cross-site", form(csrf), map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"same-site sibling", form(csrf), map[string]string{"Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
		{"good", form(csrf), nil, http.StatusSeeOther},
		{"good without browser headers", form(csrf), map[string]string{"Origin": "", "Sec-Fetch-Site": ""}, http.StatusSeeOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.do(http.MethodPost, "/console/domains", tc.form, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d\n%s", resp.StatusCode, tc.status, body)
			}
		})
	}
	b2 := f.browser(t)
	if b2.signIn(tokWrite) == csrf {
		t.Error("two sessions share a CSRF token")
	}
	if resp, _ := b2.do(http.MethodPost, "/console/domains", form(csrf), nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another session's CSRF token: %d, want 403", resp.StatusCode)
	}
}

func TestScopes(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, token, method, path string
		form                      url.Values
		status                    int
		want                      string
	}{
		{"read: overview", tokRead, "GET", "/console/", nil, 200, "Limits of your plan"},
		{"read: add domain", tokRead, "POST", "/console/domains", url.Values{"site": {"web"}, "domain": {"x.acme.test"}}, 403, `the &#34;write&#34; scope`},
		{"read: checkout", tokRead, "POST", "/console/checkout", url.Values{"plan": {"big"}}, 403, `the &#34;billing&#34; scope`},
		{"read: portal", tokRead, "POST", "/console/portal", nil, 403, `the &#34;billing&#34; scope`},
		{"read: sites page says so", tokRead, "GET", "/console/sites", nil, 200, "needs a token with the <code>write</code> scope"},
		{"read: billing page says so", tokRead, "GET", "/console/billing", nil, 200, "need a token with the <code>billing</code> scope"},
		{"billing: overview", tokBilling, "GET", "/console/", nil, 403, `the &#34;read&#34; scope`},
		{"billing: usage csv", tokBilling, "GET", "/console/usage.csv", nil, 403, `the &#34;read&#34; scope`},
		{"billing: checkout", tokBilling, "POST", "/console/checkout", url.Values{"plan": {"big"}}, 303, ""},
		{"billing: downgrade refused", tokBilling, "POST", "/console/checkout", url.Values{"plan": {"free"}}, 409, "plan downgrade not allowed"},
		{"billing: portal", tokBilling, "POST", "/console/portal", nil, 303, ""},
		{"write: add domain", tokWrite, "POST", "/console/domains", url.Values{"site": {"web"}, "domain": {"x.acme.test"}}, 303, ""},
		{"admin: checkout", tokAdmin, "POST", "/console/checkout", url.Values{"plan": {"big"}}, 303, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := f.browser(t)
			resp, _ := b.do(http.MethodPost, "/console/signin", url.Values{"token": {tc.token}}, nil)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("sign-in: %d", resp.StatusCode)
			}
			form := url.Values{}
			for k, v := range tc.form {
				form[k] = v
			}
			if tc.method == "POST" {
				form.Set("csrf", csrfOf(t, b))
			}
			resp, body := b.do(tc.method, tc.path, form, nil)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("status %d, want %d with %q\n%s", resp.StatusCode, tc.status, tc.want, body)
			}
			if strings.Contains(body, "goroutine") || strings.Contains(body, ".go:") {
				t.Errorf("the page shows a stack trace:\n%s", body)
			}
		})
	}
	if got := strings.Join(f.payments.asks, "; "); got != "checkout acme big; checkout acme free; portal acme; checkout acme big" {
		t.Errorf("payments asked %q", got)
	}
}

// csrfOf reads the CSRF token of any page with a form (sign-out is on every
// signed-in page, whatever the scopes).
func csrfOf(t *testing.T, b *browser) string {
	t.Helper()
	_, body := b.get("/console/nope")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF field on\n%s", body)
	}
	return m[1]
}

func TestCheckoutRedirect(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	csrf := b.signIn(tokAdmin)
	resp, _ := b.do(http.MethodPost, "/console/checkout", url.Values{"csrf": {csrf}, "plan": {"big"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "https://checkout.stripe.test/c/acme/big" {
		t.Errorf("checkout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, body := b.get("/console/billing")
	if !strings.Contains(body, `value="big"`) || strings.Contains(body, `name="plan" value="small"`) || strings.Contains(body, `name="plan" value="free"`) {
		t.Errorf("billing page must offer big only (ranked above small):\n%s", body)
	}
}

// TestOtherOrgUnreachable: a session of acme sees nothing of org other,
// whatever it puts in the URL or the form.
func TestOtherOrgUnreachable(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	csrf := b.signIn(tokAdmin)
	for _, tc := range []struct {
		method, path string
		form         url.Values
		status       int
	}{
		{"GET", "/console/?org=other", nil, 200},
		{"GET", "/console/usage?org=other", nil, 200},
		{"GET", "/console/usage.csv?org=other&by=site", nil, 200},
		{"GET", "/console/sites?org=other", nil, 200},
		{"GET", "/console/events?org=other", nil, 200},
		{"GET", "/console/domains/theirs.example", nil, 404},
		{"GET", "/console/domains/theirs.example?site=theirs", nil, 404},
		{"GET", "/console/domains/theirs.example?site=web", nil, 404},
		{"GET", "/console/domains/new.example?site=theirs", nil, 404},
		{"POST", "/console/domains", url.Values{"site": {"theirs"}, "domain": {"grab.example"}}, 404},
		{"POST", "/console/domains", url.Values{"site": {"web"}, "domain": {"theirs.example"}}, 409},
	} {
		t.Run(tc.method+" "+tc.path+" "+tc.form.Encode(), func(t *testing.T) {
			if tc.form != nil {
				tc.form.Set("csrf", csrf)
			}
			resp, body := b.do(tc.method, tc.path, tc.form, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d\n%s", resp.StatusCode, tc.status, body)
			}
			for _, leak := range []string{"theirs", "7777", "other Inc", ">other<"} {
				if strings.Contains(body, leak) && !(tc.status == 409 && leak == "theirs") {
					t.Errorf("the page shows %q of org other:\n%s", leak, body)
				}
			}
		})
	}
	if _, err := f.reg.Domain("grab.example"); err == nil {
		t.Error("grab.example was attached to another org's site")
	}
}

func TestOverview(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signIn(tokRead)
	_, body := b.get("/console/")
	for _, want := range []string{
		`id="plan">small<`, `id="state">active<`, `<strong>Allowed</strong> (allow)`,
		// 2×(5000+3000+12000)+100 bytes this month against 1 GiB.
		`<th scope="row">Egress this month</th><td>19.6 KiB</td><td>1.0 GiB</td>`,
		`<tr class="over"><th scope="row">Sites</th><td>2 <strong>(over)</strong></td><td>1</td>`,
		`<th scope="row">Domains</th><td>1</td><td>3</td>`,
		`id="over-plan"`, "Sites: blog",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q:\n%s", want, body)
		}
	}
}

func TestUsageChart(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signIn(tokRead)
	resp, body := b.get("/console/usage?period=2025-03")
	if resp.StatusCode != 200 {
		t.Fatalf("%d\n%s", resp.StatusCode, body)
	}
	svg := body[strings.Index(body, `<svg id="usage-chart"`):strings.Index(body, "</svg>")]
	if n := strings.Count(svg, `<rect class="bar"`); n != 31 {
		t.Errorf("%d bars, want 31 (one per day of March)", n)
	}
	for _, want := range []string{`role="img"`, `aria-labelledby="chart-title chart-desc"`,
		`<title id="chart-title">Egress per day, 2025-03</title>`, `<desc id="chart-desc">31 bars, one per day of 2025-03.`,
		"<title>2025-03-17: 11.7 KiB egress, 10 requests</title>", "<title>2025-03-01: 0 B egress, 0 requests</title>"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	// The busiest day (17th) is the full plot height; the 4th a quarter.
	heights := regexp.MustCompile(`height="([0-9.]+)"><title>2025-03-(04|17)`).FindAllStringSubmatch(svg, -1)
	if len(heights) != 2 || heights[0][1] != "46" || heights[1][1] != "184" {
		t.Errorf("bar heights %v, want 46 (4th) and 184 (17th)", heights)
	}
	if !strings.Contains(body, `<th scope="row">web</th><td>19.5 KiB</td><td>30</td>`) || !strings.Contains(body, `<th scope="row">blog</th><td>100 B</td><td>1</td>`) {
		t.Errorf("per-site table:\n%s", body)
	}
	// A bar per site, in percent of the busiest (web: 19.5 KiB = 19,968 B;
	// blog: 100 B, 0 %).
	for _, want := range []string{`<title>web: 100 % of the busiest site's egress</title><rect class="bar" x="0" y="0" width="100"`,
		`<title>blog: 0 % of the busiest site's egress</title><rect class="bar" x="0" y="0" width="0"`} {
		if !strings.Contains(body, want) {
			t.Errorf("per-site bars lack %q", want)
		}
	}
	if resp, _ := b.get("/console/usage?period=March"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a bad period: %d", resp.StatusCode)
	}
}

func TestUsageCSV(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signIn(tokRead)
	resp, body := b.get("/console/usage.csv?period=2025-03")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/csv; charset=utf-8" {
		t.Fatalf("%d %s", resp.StatusCode, ct)
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename="usage-acme-2025-03.csv"` {
		t.Errorf("Content-Disposition %q", cd)
	}
	var want strings.Builder
	want.WriteString("day,egress_bytes,requests,ingress_bytes,storage_byte_seconds\n")
	for d := 1; d <= 31; d++ {
		egress, req := usageDays[d], int64(0)
		if egress > 0 {
			req = 10
		}
		if d == 3 {
			egress, req = egress+100, req+1
		}
		fmt.Fprintf(&want, "2025-03-%02d,%d,%d,0,0\n", d, egress, req)
	}
	if body != want.String() {
		t.Errorf("per-day CSV:\n%s\nwant:\n%s", body, want.String())
	}
	_, body = b.get("/console/usage.csv?period=2025-03&by=site")
	if want := "site,egress_bytes,requests,ingress_bytes,storage_byte_seconds\nblog,100,1,0,0\nweb,20000,30,0,0\n"; body != want {
		t.Errorf("per-site CSV:\n%s\nwant:\n%s", body, want)
	}
}

func TestAddDomain(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	csrf := b.signIn(tokWrite)
	add := url.Values{"csrf": {csrf}, "site": {"web"}, "domain": {"Shop.Acme.Test."}}
	resp, _ := b.do(http.MethodPost, "/console/domains", add, nil)
	const page = "/console/domains/shop.acme.test?site=web"
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != page {
		t.Fatalf("add: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, body := b.get(page)
	for _, want := range []string{`id="domain-state" class="pending">waiting for DNS`,
		"<td>CNAME</td><td><code>shop.acme.test</code></td><td><code>" + cnameHost + "</code></td>",
		"<td>TXT</td><td><code>_tollgate.shop.acme.test</code></td><td><code>web</code></td>", "Check DNS and attach"} {
		if !strings.Contains(body, want) {
			t.Errorf("pending page lacks %q:\n%s", want, body)
		}
	}
	if _, err := f.reg.Domain("shop.acme.test"); err == nil {
		t.Fatal("attached before DNS proved it")
	}
	for _, tc := range []struct{ name, domain, via string }{{"txt", "shop.acme.test", "dns-txt"}, {"cname", "cdn.acme.test", "dns-cname"}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.via == "dns-txt" {
				f.dns.SetTXT("_tollgate."+tc.domain, "web")
			} else {
				f.dns.SetCNAME(tc.domain, cnameHost)
			}
			resp, _ := b.do(http.MethodPost, "/console/domains", url.Values{"csrf": {csrf}, "site": {"web"}, "domain": {tc.domain}}, nil)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("check: %d", resp.StatusCode)
			}
			d, err := f.reg.Domain(tc.domain)
			if err != nil || d.Site != "web" || d.Status != "verified" || d.Via != tc.via {
				t.Fatalf("domain %+v %v, want verified on web via %s", d, err, tc.via)
			}
			_, body := b.get(resp.Header.Get("Location"))
			if !strings.Contains(body, `id="domain-state" class="ok">verified</strong> (proven by `+tc.via+`)`) {
				t.Errorf("domain page:\n%s", body)
			}
		})
	}
	// The plan allows 3 domains: www, shop, cdn. A fourth is refused in words.
	f.dns.SetTXT("_tollgate.more.acme.test", "web")
	resp, body = b.do(http.MethodPost, "/console/domains", url.Values{"csrf": {csrf}, "site": {"web"}, "domain": {"more.acme.test"}}, nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "allows at most 3 domains") {
		t.Errorf("over the domain limit: %d\n%s", resp.StatusCode, body)
	}
	if resp, body := b.do(http.MethodPost, "/console/domains", url.Values{"csrf": {csrf}, "site": {"web"}, "domain": {"not a domain"}}, nil); resp.StatusCode != 400 {
		t.Errorf("a bad name: %d\n%s", resp.StatusCode, body)
	}
}

// TestCreditPage: the org's prepaid credit, balance and entries newest
// first with the balance after each, in the ledger's currency; another
// org's entries never show.
func TestCreditPage(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signIn(tokRead)
	resp, body := b.get("/console/credit")
	if resp.StatusCode != 200 {
		t.Fatalf("%d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{"Balance: <strong>37.66 EUR</strong>", "<td>usage</td><td>-12.34 EUR</td><td>37.66 EUR</td>",
		"<td>grant</td><td>50.00 EUR</td><td>50.00 EUR</td><td>welcome credit</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("credit page lacks %q", want)
		}
	}
	if strings.Index(body, "-12.34 EUR") > strings.Index(body, "welcome credit") {
		t.Error("entries are not newest first")
	}
	if strings.Contains(body, "7.77 EUR") {
		t.Error("another org's credit shows")
	}
}
