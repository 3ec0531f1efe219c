package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestTollgateReason: every refusal the proxy decides answers its status
// with its code in Tollgate-Reason, for real requests over loopback TCP
// (plain HTTP and TLS); pages served and answers that are no decision carry
// none. Every code package reason lists as the proxy's is in the table (or,
// for NO_ACCOUNT, which a consistent registry cannot produce, in
// TestTollgateReasonNoAccount).
func TestTollgateReason(t *testing.T) {
	gates := &fakeGates{}
	billed := newHarnessWith(t, Config{}, Limits{}, func(o *Options) { o.Usage, o.Gates = newTestMeter(t), gates })
	unbilled := newHarness(t, Config{}, Limits{})
	ctx := context.Background()
	_, err := billed.reg.AttachDomain(ctx, "www", "alt.example")
	must(t, err)
	cert, err := certtest.New(time.Hour, "www.example", "alt.example")
	must(t, err)
	b, u := listenLoopback(t, billed, cert), listenLoopback(t, unbilled, cert)

	suspend := func(state string) func() {
		return func() {
			_, err := unbilled.reg.UpdateOrg(ctx, "acme", sites.OrgPatch{State: &state})
			must(t, err)
		}
	}
	decide := func(d access.Decision) func() {
		return func() {
			gates.Gate("acme").Set(d, 100_000)
			gates.Gate("acme").SetExcluded(nil)
		}
	}
	exclude := func(site, domain string) func() {
		return func() {
			gates.Gate("acme").Set(access.Allow, 0)
			ex := &access.Excluded{Sites: map[string]struct{}{}, Domains: map[string]struct{}{}}
			if site != "" {
				ex.Sites[site] = struct{}{}
			}
			if domain != "" {
				ex.Domains[domain] = struct{}{}
			}
			gates.Gate("acme").SetExcluded(ex)
		}
	}
	activate := func(active *bool) func() {
		return func() {
			decide(access.Allow)()
			_, err := billed.reg.SetSiteActive(ctx, "www", active)
			must(t, err)
		}
	}
	no := false
	tests := []struct {
		name   string
		set    func()
		addr   string
		sni    string // "": plain HTTP
		host   string
		path   string
		status int
		code   reason.Code // "": no Tollgate-Reason
	}{
		{"quota exceeded", decide(access.BlockQuota), b.plain, "", "www.example", "/", 429, reason.QuotaExceeded},
		{"quota exceeded over TLS", decide(access.BlockQuota), b.tls, "www.example", "www.example", "/", 429, reason.QuotaExceeded},
		{"expired", decide(access.BlockExpired), b.plain, "", "www.example", "/", 402, reason.PaymentRequired},
		{"suspended by billing", decide(access.BlockSuspended), b.plain, "", "www.example", "/", 403, reason.AccountSuspended},
		{"suspended without billing", suspend(sites.StateSuspended), u.plain, "", "www.example", "/", 403, reason.AccountSuspended},
		{"misdirected", decide(access.Allow), b.tls, "alt.example", "www.example", "/", 421, reason.MisdirectedRequest},
		{"storage quota exceeded", decide(access.BlockStorage), b.plain, "", "www.example", "/", 429, reason.StorageQuotaExceeded},
		{"site not in the plan", exclude("www", ""), b.plain, "", "www.example", "/", 402, reason.UpgradeRequired},
		{"domain not in the plan", exclude("", "alt.example"), b.tls, "alt.example", "alt.example", "/", 402, reason.UpgradeRequired},
		{"the site's kept domain", exclude("", "alt.example"), b.plain, "", "www.example", "/", 200, ""},
		{"site deactivated", activate(&no), b.plain, "", "www.example", "/", 404, reason.SiteInactive},
		{"site unmarked", activate(nil), b.plain, "", "www.example", "/", 200, ""},
		{"allowed", decide(access.Allow), b.plain, "", "www.example", "/", 200, ""},
		{"throttled", decide(access.Throttle), b.plain, "", "www.example", "/", 200, ""},
		{"active without billing", suspend(sites.StateActive), u.plain, "", "www.example", "/", 200, ""},
		{"unknown host", decide(access.Allow), b.plain, "", "nowhere.example", "/", 404, ""},
		{"missing file", decide(access.Allow), b.plain, "", "www.example", "/no-such-file", 404, ""},
	}
	// NO_ACCOUNT: TestTollgateReasonNoAccount; RATE_LIMITED: TestPerIPRateLimit
	// and TestOrgRateLimit (ratelimit_test.go).
	covered := []reason.Code{reason.NoAccount, reason.RateLimited}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.set()
			res := getLoopback(t, tc.addr, tc.sni, cert, tc.host, tc.path)
			if res.StatusCode != tc.status || res.Header.Get(reason.HeaderName) != string(tc.code) {
				t.Fatalf("%d, %s: %q; want %d, %q", res.StatusCode, reason.HeaderName, res.Header.Get(reason.HeaderName), tc.status, tc.code)
			}
			if tc.code != "" && res.Header.Get("Content-Type") != string(contentTypeHTML) {
				t.Errorf("Content-Type %q: the refusal is not tollgate's page", res.Header.Get("Content-Type"))
			}
		})
		covered = append(covered, tc.code)
	}
	for _, e := range reason.All() {
		if e.Sender == reason.SentByProxy && !slices.Contains(covered, e.Code) {
			t.Errorf("%s is a proxy code with no row in this test", e.Code)
		}
	}
}

// TestTollgateReasonNoAccount: a site whose org is not in the table (which
// the registry never lets happen: an org with sites cannot be deleted)
// answers 403 NO_ACCOUNT.
func TestTollgateReasonNoAccount(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	ctx := newCtx("www.example", "/")
	if h.proxy.enforce(ctx, &target{}, []byte("www.example")) {
		t.Fatal("a site without an org was served")
	}
	if got := string(ctx.Response.Header.Peek(reason.HeaderName)); ctx.Response.StatusCode() != 403 || got != string(reason.NoAccount) {
		t.Fatalf("%d %q; want 403 %q", ctx.Response.StatusCode(), got, reason.NoAccount)
	}
}

// loopback is a harness's proxy served on real loopback listeners.
type loopback struct{ plain, tls string }

func listenLoopback(t *testing.T, h *harness, cert certtest.Cert) loopback {
	t.Helper()
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.Serve(plainLn)
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(tlsLn, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"http/1.1"}})
	return loopback{plain: plainLn.Addr().String(), tls: tlsLn.Addr().String()}
}

// getLoopback sends one GET on a new connection to addr, over TLS with sni
// when it is set, and returns the response with its body read.
func getLoopback(t *testing.T, addr, sni string, cert certtest.Cert, host, path string) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	must(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	if sni != "" {
		tc := tls.Client(conn, &tls.Config{RootCAs: cert.Pool(), ServerName: sni, NextProtos: []string{"http/1.1"}})
		must(t, tc.Handshake())
		conn = tc
	}
	req, err := http.NewRequest("GET", "http://"+host+path, nil)
	must(t, err)
	req.Close = true
	must(t, req.Write(conn))
	res, err := http.ReadResponse(bufio.NewReader(conn), req)
	must(t, err)
	_, err = io.Copy(io.Discard, res.Body)
	must(t, err)
	res.Body.Close()
	return res
}

// TestRefusalPages: refusals that share a status with another of other
// meaning say their own sentence; the others keep the status's page.
func TestRefusalPages(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   []byte
		want   string
	}{
		{429, reasonStorage, "stores more than their plan includes"},
		{429, reasonQuota, "Too many requests"},
		{402, reasonUpgrade, "not included in its owner's current plan"},
		{402, reasonPayment, "unpaid balance"},
	} {
		ctx := newCtx("www.example", "/")
		defaultPages().writeRefusal(ctx, tc.status, tc.code, "acme")
		if ctx.Response.StatusCode() != tc.status || !strings.Contains(string(ctx.Response.Body()), tc.want) {
			t.Errorf("%s: %d %q, want %d with %q", tc.code, ctx.Response.StatusCode(), ctx.Response.Body(), tc.status, tc.want)
		}
	}
}
