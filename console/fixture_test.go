package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/console"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/internal/dnstest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/tollgate-edge/tollgate/store"
)

// testNow is the fixture's clock: March 2025 has 31 days.
var testNow = time.Date(2025, 3, 20, 12, 0, 0, 0, time.UTC)

// Secrets of the fake token store.
const (
	tokRead    = "tg_read_0123456789abcdef"
	tokWrite   = "tg_write_0123456789abcdef"
	tokBilling = "tg_billing_0123456789abcdef"
	tokAdmin   = "tg_admin_0123456789abcdef"
	tokOther   = "tg_other_0123456789abcdef"
	tokRevoked = "tg_revoked_0123456789abcdef"
	tokExpired = "tg_expired_0123456789abcdef"
	cnameHost  = "edge.tollgate.test"
)

// fakeTokens is the token store: secrets to tenants, or errors.
type fakeTokens struct {
	mu sync.Mutex
	m  map[string]console.Tenant
	e  map[string]error
}

func (f *fakeTokens) Tenant(_ context.Context, secret string) (console.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err, ok := f.e[secret]; ok {
		return console.Tenant{}, err
	}
	t, ok := f.m[secret]
	if !ok {
		return console.Tenant{}, console.ErrTokenUnknown
	}
	return t, nil
}

func (f *fakeTokens) revoke(secret string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.e[secret] = console.ErrTokenRevoked
}

// fakePayments answers Stripe-like URLs and records the orgs asked for.
type fakePayments struct {
	mu   sync.Mutex
	asks []string
}

func (f *fakePayments) Checkout(_ context.Context, org, plan string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asks = append(f.asks, "checkout "+org+" "+plan)
	if plan == "free" {
		return "", billing.ErrDowngrade
	}
	return "https://checkout.stripe.test/c/" + org + "/" + plan, nil
}

func (f *fakePayments) Portal(_ context.Context, org string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asks = append(f.asks, "portal "+org)
	return "https://billing.stripe.test/p/" + org, nil
}

type fixture struct {
	srv      *httptest.Server
	reg      *sites.Registry
	tokens   *fakeTokens
	payments *fakePayments
	dns      *dnstest.Server
}

// newFixture serves the console over TLS on loopback, over a registry on
// bbolt with orgs acme (sites web and blog, one domain) and other (site
// theirs, domain theirs.example), real billing, and recorded usage.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith is newFixture with more collaborators: more, when not
// nil, changes the console's options and gets the fixture's billing.
func newFixtureWith(t *testing.T, more func(*console.Options, *billing.Billing)) *fixture {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = reg.PutPlan(ctx, sites.Plan{Name: "small", Rank: 1, Sites: 1, Domains: 3, EgressBytes: 1 << 30, StorageBytes: 1 << 20})
	must(err)
	_, err = reg.PutPlan(ctx, sites.Plan{Name: "big", Rank: 2, Sites: 10, Domains: 10})
	must(err)
	for _, o := range []string{"acme", "other"} {
		_, err = reg.CreateOrg(ctx, sites.Org{ID: o, Name: o + " Inc", Plan: "big", State: sites.StateActive})
		must(err)
	}
	for _, s := range []struct{ id, org string }{{"web", "acme"}, {"blog", "acme"}, {"theirs", "other"}} {
		_, err = reg.CreateSite(ctx, sites.Site{ID: s.id, Org: s.org, Source: sites.Source{Type: sites.SourceDir, Path: "/srv/" + s.id}})
		must(err)
	}
	_, err = reg.AttachDomain(ctx, "web", "www.acme.test")
	must(err)
	_, err = reg.AttachDomain(ctx, "theirs", "theirs.example")
	must(err)
	// acme moves down to small, which allows one site: it owns one too many.
	small := "small"
	for _, o := range []string{"acme", "other"} {
		_, err = reg.UpdateOrg(ctx, o, sites.OrgPatch{Plan: &small})
		must(err)
	}
	ledger, err := credit.New(credit.Config{Store: store.NewBoltCredit(st), Currency: "eur"})
	must(err)
	bill, err := billing.New(ctx, billing.Config{}, billing.Options{Sites: reg, Store: st, Metrics: prometheus.NewRegistry(),
		Credits: ledger, Codes: store.NewBoltCredit(st), Now: func() time.Time { return testNow }})
	must(err)
	for _, e := range []credit.Entry{{Org: "acme", Amount: 5000, Kind: credit.Grant, Source: "welcome", Note: "welcome credit"},
		{Org: "acme", Amount: -1234, Kind: credit.Usage, Source: "usage:acme:2025031700"},
		{Org: "other", Amount: 777, Kind: credit.Grant, Source: "theirs"}} {
		_, _, _, err = bill.Credit(ctx, e)
		must(err)
	}
	usage := store.NewBoltUsage(st)
	recordUsage(t, usage)
	dns := dnstest.Start(t)
	f := &fixture{reg: reg, dns: dns, payments: &fakePayments{}, tokens: &fakeTokens{m: map[string]console.Tenant{
		tokRead:    {Org: "acme", Scopes: []string{"read"}},
		tokWrite:   {Org: "acme", Scopes: []string{"read", "write"}},
		tokBilling: {Org: "acme", Scopes: []string{"billing"}},
		tokAdmin:   {Org: "acme", Scopes: []string{"admin"}},
		tokOther:   {Org: "other", Scopes: []string{"admin"}},
	}, e: map[string]error{tokRevoked: console.ErrTokenRevoked, tokExpired: console.ErrTokenExpired}}}
	opts := console.Options{Tokens: f.tokens, Registry: reg,
		Usage: usage, Accounts: bill, Payments: f.payments, Verifier: gitea.NewDNSVerifier(dns.Addr(), 0, gitea.DNSOptions{}), Credits: bill,
		Now: func() time.Time { return testNow }}
	if more != nil {
		more(&opts, bill)
	}
	c, err := console.New(console.Config{CNAMETarget: cnameHost}, opts)
	must(err)
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, c)
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// usageDays are the March days the fixture records, with acme's egress
// (site web) that day; blog gets 100 bytes on the 3rd, other 7777 on the 3rd.
var usageDays = map[int]int64{3: 5000, 4: 3000, 17: 12000}

func recordUsage(t *testing.T, u *store.BoltUsage) {
	t.Helper()
	seq := uint64(0)
	for d, egress := range usageDays {
		for _, hour := range []int{1, 13} { // two hours a day: the day sums them
			seq++
			deltas := []meter.Delta{{Org: "acme", Site: "web", Values: meter.Values{EgressBytes: egress / 2, Requests: 5}}}
			if d == 3 && hour == 1 {
				deltas = append(deltas, meter.Delta{Org: "acme", Site: "blog", Values: meter.Values{EgressBytes: 100, Requests: 1}},
					meter.Delta{Org: "other", Site: "theirs", Values: meter.Values{EgressBytes: 7777, Requests: 9}})
			}
			b := &meter.Batch{Node: "n1", Seq: seq, Time: time.Date(2025, 3, d, hour, 0, 0, 0, time.UTC), Deltas: deltas}
			if err := u.Apply(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see the 303s.
type browser struct {
	t   *testing.T
	f   *fixture
	c   *http.Client
	jar *cookiejar.Jar
}

func (f *fixture) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	c := f.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: t, f: f, c: c, jar: jar}
}

// do sends a request; a POST carries form as a browser on the console
// would (same Origin, Sec-Fetch-Site same-origin) unless hdr overrides.
func (b *browser) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.f.srv.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", b.f.srv.URL)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

func (b *browser) get(path string) (*http.Response, string) {
	return b.do(http.MethodGet, path, nil, nil)
}

// signIn signs in with secret and returns the session's CSRF token.
func (b *browser) signIn(secret string) string {
	b.t.Helper()
	resp, body := b.do(http.MethodPost, "/console/signin", url.Values{"token": {secret}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("sign-in with %s: %d\n%s", secret, resp.StatusCode, body)
	}
	return b.csrf()
}

// csrf reads the CSRF token from the sites page's forms.
func (b *browser) csrf() string {
	b.t.Helper()
	_, body := b.get("/console/sites")
	const marker = `name="csrf" value="`
	i := strings.Index(body, marker)
	if i < 0 {
		b.t.Fatalf("no csrf field in\n%s", body)
	}
	rest := body[i+len(marker):]
	return rest[:strings.IndexByte(rest, '"')]
}
