package proxy

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/reason"
)

const testRenewal = "https://console.example/orgs/{org}/billing?from=paused&x=1"

// renewalLink is the built-in page's link for org acme with testRenewal:
// the query's & escaped in the attribute.
const renewalLink = `<a href="https://console.example/orgs/acme/billing?from=paused&amp;x=1" rel="nofollow">`

// writePages writes the templates of files (name → text) to a new
// directory.
func writePages(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	return dir
}

// operatorPages are an operator's overrides of the 402 page and of one
// refusal's, printing every variable.
var operatorPages = map[string]string{
	"402.html": `<!doctype html><title>Paused</title><p>brand|{{.Status}}|{{.StatusText}}|{{.Reason}}|{{.Text}}|org={{.Org}}</p>` +
		`{{with .RenewalURL}}<a class="renew" href="{{.}}">renew</a>{{end}}`,
	"STORAGE_QUOTA_EXCEEDED.html": `<p>storage full for {{.Org}} ({{.Status}} {{.Reason}}) <a href="{{.RenewalURL}}">upgrade</a></p>`,
	"notes.txt":                   "not a page: left alone",
}

// TestErrorPagesOverLoopback: the pages of refusals and errors, for real
// requests over TLS with HTTP/1.1 and h2: the built-in pages keep their
// status, sentence and Tollgate-Reason, and link to the renewal URL only
// on the refusals an org settles by paying or upgrading, only when
// renewal_url is set, without printing the org's id; an operator's
// directory replaces the 402 page and the STORAGE_QUOTA_EXCEEDED page,
// with every variable rendered and escaped.
func TestErrorPagesOverLoopback(t *testing.T) {
	operator, err := LoadErrorPages(PagesConfig{Dir: writePages(t, operatorPages), RenewalURL: testRenewal})
	must(t, err)
	withRenewal, err := LoadErrorPages(PagesConfig{RenewalURL: testRenewal})
	must(t, err)
	type row struct {
		name   string
		set    func(g *access.Gate)
		path   string
		status int
		code   reason.Code
		want   []string
		absent []string
	}
	decide := func(d access.Decision) func(g *access.Gate) {
		return func(g *access.Gate) { g.SetExcluded(nil); g.Set(d, 100_000) }
	}
	notInPlan := func(g *access.Gate) {
		g.Set(access.Allow, 0)
		g.SetExcluded(&access.Excluded{Sites: map[string]struct{}{"www": {}}})
	}
	builtinRows := func(link string) []row {
		var absentLink []string
		want := func(s ...string) []string { return s }
		if link == "" {
			absentLink = []string{"<a "}
		} else {
			absentLink = []string{"org=", ">acme<"}
		}
		withLink := func(s ...string) []string {
			if link != "" {
				s = append(s, link, "Is this your site? Manage its plan.")
			}
			return s
		}
		return []row{
			{"expired", decide(access.BlockExpired), "/", 402, reason.PaymentRequired,
				withLink("<title>402 Payment Required</title>", "<p>This site is paused: its account has an unpaid balance. It will be back as soon as it is settled.</p>"), absentLink},
			{"quota", decide(access.BlockQuota), "/", 429, reason.QuotaExceeded,
				withLink("<h1>429 Too Many Requests</h1>", "<p>Too many requests. Please retry later.</p>"), absentLink},
			{"storage", decide(access.BlockStorage), "/", 429, reason.StorageQuotaExceeded,
				withLink("<p>This site is paused: its owner stores more than their plan includes."), absentLink},
			{"not in plan", notInPlan, "/", 402, reason.UpgradeRequired,
				withLink("<p>This site is not included in its owner's current plan.</p>"), absentLink},
			{"suspended", decide(access.BlockSuspended), "/", 403, reason.AccountSuspended,
				want("<title>403 Forbidden</title>", "<p>Access to this site is not allowed.</p>"), []string{"<a "}},
			{"plain error", decide(access.Allow), "/index.html", 405, "",
				want("<title>405 Method Not Allowed</title>", "<p>This method is not allowed here.</p>"), []string{"<a "}},
		}
	}
	sets := []struct {
		name  string
		pages *ErrorPages
		rows  []row
	}{
		{"built-in", nil, builtinRows("")},
		{"built-in with renewal_url", withRenewal, builtinRows(renewalLink)},
		{"operator", operator, []row{
			{"expired", decide(access.BlockExpired), "/", 402, reason.PaymentRequired, []string{
				"brand|402|Payment Required|PAYMENT_REQUIRED|This site is paused: its account has an unpaid balance.",
				"|org=acme</p>", `<a class="renew" href="https://console.example/orgs/acme/billing?from=paused&amp;x=1">`}, []string{"tollgate</small>"}},
			{"not in plan: the 402 page", notInPlan, "/", 402, reason.UpgradeRequired, []string{
				"brand|402|Payment Required|UPGRADE_REQUIRED|This site is not included in its owner's current plan.|org=acme", `class="renew"`}, nil},
			{"storage: its own page", decide(access.BlockStorage), "/", 429, reason.StorageQuotaExceeded, []string{
				`<p>storage full for acme (429 STORAGE_QUOTA_EXCEEDED) <a href="https://console.example/orgs/acme/billing?from=paused&amp;x=1">upgrade</a></p>`}, []string{"brand"}},
			{"quota: built-in", decide(access.BlockQuota), "/", 429, reason.QuotaExceeded,
				[]string{"<h1>429 Too Many Requests</h1>", renewalLink}, []string{"brand"}},
			{"suspended: built-in, no link", decide(access.BlockSuspended), "/", 403, reason.AccountSuspended,
				[]string{"<h1>403 Forbidden</h1>"}, []string{"<a ", "brand"}},
		}},
	}
	for _, set := range sets {
		gates := &fakeGates{}
		h := newTLSHarnessWith(t, Limits{}, func(o *Options) { o.Usage, o.Gates, o.ErrorPages = newTestMeter(t), gates, set.pages })
		for _, proto := range []string{"h1", "h2"} {
			c := h.client(proto)
			for _, tc := range set.rows {
				t.Run(fmt.Sprintf("%s/%s/%s", set.name, proto, tc.name), func(t *testing.T) {
					tc.set(gates.Gate("acme"))
					method := "GET"
					if tc.status == 405 {
						method = "POST"
					}
					req, err := http.NewRequest(method, "https://www.example"+tc.path, nil)
					must(t, err)
					res, err := c.Do(req)
					must(t, err)
					b, err := io.ReadAll(res.Body)
					res.Body.Close()
					must(t, err)
					body := string(b)
					if res.StatusCode != tc.status || res.Header.Get(reason.HeaderName) != string(tc.code) {
						t.Fatalf("%d %s: %q; want %d %q", res.StatusCode, reason.HeaderName, res.Header.Get(reason.HeaderName), tc.status, tc.code)
					}
					if ct, cc := res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"); ct != string(contentTypeHTML) || cc != "no-store" {
						t.Errorf("Content-Type %q, Cache-Control %q; want tollgate's page, no-store", ct, cc)
					}
					for _, w := range tc.want {
						if !strings.Contains(body, w) {
							t.Errorf("page lacks %q:\n%s", w, body)
						}
					}
					for _, a := range tc.absent {
						if strings.Contains(body, a) {
							t.Errorf("page has %q:\n%s", a, body)
						}
					}
				})
			}
		}
	}
}

// TestErrorPagesEscape: the variables an operator's template prints are
// HTML-escaped for where they stand, and {org} in the renewal URL is
// escaped to stay one path segment or query value.
func TestErrorPagesEscape(t *testing.T) {
	e, err := LoadErrorPages(PagesConfig{RenewalURL: "https://c.example/o/{org}?again={org}", Dir: writePages(t, map[string]string{
		"default.html": `<p>{{.Org}}</p><a href="{{.RenewalURL}}">x</a><script>var org = {{.Org}};</script>`,
	})})
	must(t, err)
	ctx := newCtx("www.example", "/")
	e.writeRefusal(ctx, 402, reasonPayment, `<b>"a b"&c/d</b>`)
	body := string(ctx.Response.Body())
	for _, w := range []string{
		`<p>&lt;b&gt;&#34;a b&#34;&amp;c/d&lt;/b&gt;</p>`,
		`href="https://c.example/o/%3Cb%3E%22a%20b%22%26c%2Fd%3C%2Fb%3E?again=%3Cb%3E%22a%20b%22%26c%2Fd%3C%2Fb%3E"`,
		`var org = "\u003cb\u003e\"a b\"\u0026c/d\u003c/b\u003e";`,
	} {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %s:\n%s", w, body)
		}
	}
}

// TestLoadErrorPagesBroken: a template that does not parse, does not
// execute with sample data (for any status it serves), renders too much,
// or has no page's name fails, and the error names its file.
func TestLoadErrorPagesBroken(t *testing.T) {
	for _, tc := range []struct {
		name, file, text, want string
	}{
		{"parse error", "402.html", "<p>{{.Status</p>", "template: 402.html:1: "},
		{"unknown variable", "default.html", "<p>{{.Plan}}</p>", "can't evaluate field Plan"},
		{"fails for one status only", "5xx.html", `{{if eq .Status 503}}{{index .StatusText 99}}{{end}}`, "rendering the 503 page: template: 5xx.html:1:23: executing"},
		{"escaping fails", "5xx.html", `{{if eq .Status 503}}{{template "missing"}}{{end}}`, `no such template "missing"`},
		{"fails for one refusal only", "429.html", `{{if .Reason}}{{index .Reason 99}}{{end}}`, "the QUOTA_EXCEEDED page (429)"},
		{"too large", "404.html", `{{range 200000}}..{{end}}`, "more than 128 KiB"},
		{"not a page's name", "4O4.html", "<p>typo</p>", "not a page's name"},
		{"a code of the admin API", "PLAN_LIMIT.html", "<p>no</p>", "not a page's name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writePages(t, map[string]string{tc.file: tc.text, "403.html": "<p>fine</p>"})
			_, err := LoadErrorPages(PagesConfig{Dir: dir})
			if err == nil {
				t.Fatal("loaded")
			}
			path := filepath.Join(dir, tc.file)
			msg := err.Error()
			if !strings.Contains(msg, "proxy.error_pages: "+path+": ") || !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q; want it to name %s and say %q", msg, path, tc.want)
			}
			if n := strings.Count(msg, "\n"); n != 0 {
				t.Errorf("%d lines for one broken file:\n%s", n+1, msg)
			}
		})
	}
	if _, err := LoadErrorPages(PagesConfig{Dir: filepath.Join(t.TempDir(), "none")}); err == nil || !strings.Contains(err.Error(), "proxy.error_pages: ") {
		t.Errorf("a missing directory: %v", err)
	}
}

// TestErrorPagesPerOrg: a page that does not show the org is rendered once
// for all; one that does is rendered for each org and kept, bounded, and
// every org gets its own page however many evict one another.
func TestErrorPagesPerOrg(t *testing.T) {
	plain, err := LoadErrorPages(PagesConfig{RenewalURL: "https://console.example/billing"})
	must(t, err)
	if p := plain.refusal[string(reason.PaymentRequired)]; p.perOrg || !strings.Contains(string(p.body), `href="https://console.example/billing"`) {
		t.Errorf("renewal_url without {org}: perOrg %v, page %s; want one page with the link", p.perOrg, p.body)
	}
	perOrg, err := LoadErrorPages(PagesConfig{RenewalURL: "https://console.example/orgs/{org}"})
	must(t, err)
	for code, p := range perOrg.refusal {
		if want := renewalCodes[reason.Code(code)]; p.perOrg != want {
			t.Errorf("%s: perOrg %v, want %v", code, p.perOrg, want)
		}
	}
	p := perOrg.refusal[string(reason.PaymentRequired)]
	for round := range 2 {
		for i := range 3 * orgPagesSlots {
			org := fmt.Sprintf("org-%d", i)
			body := string(perOrg.orgs.get(perOrg, p, org))
			if !strings.Contains(body, `href="https://console.example/orgs/`+org+`"`) {
				t.Fatalf("round %d, %s: page %s", round, org, body)
			}
		}
	}
	kept := 0
	for i := range perOrg.orgs.slots {
		if perOrg.orgs.slots[i].Load() != nil {
			kept++
		}
	}
	if kept > orgPagesSlots {
		t.Errorf("%d pages kept, more than %d", kept, orgPagesSlots)
	}
}

// TestRefusalPageAllocs: the refusal page of an org with a renewal link
// allocates nothing after the org's first refusal, so a blocked org's
// visitors cost no allocation however many they are.
func TestRefusalPageAllocs(t *testing.T) {
	pages, err := LoadErrorPages(PagesConfig{RenewalURL: testRenewal})
	must(t, err)
	gates := &fakeGates{}
	h := newHarnessWith(t, Config{}, Limits{}, func(o *Options) { o.Usage, o.Gates, o.ErrorPages = newTestMeter(t), gates, pages })
	for _, d := range []access.Decision{access.BlockExpired, access.BlockQuota, access.BlockStorage, access.BlockSuspended} {
		gates.Gate("acme").Set(d, 100_000)
		ctx := newCtx("www.example", "/")
		h.proxy.Handler(ctx) // the org's first refusal renders its page
		if d != access.BlockSuspended && !strings.Contains(string(ctx.Response.Body()), renewalLink) {
			t.Fatalf("%v: no renewal link in %s", d, ctx.Response.Body())
		}
		allocs := testing.AllocsPerRun(1000, func() {
			ctx.Response.Reset()
			h.proxy.Handler(ctx)
		})
		if allocs != 0 {
			t.Errorf("%v: %.2f allocations per refused request; want 0", d, allocs)
		}
	}
}
