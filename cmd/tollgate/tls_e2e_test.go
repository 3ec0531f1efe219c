package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/dnstest"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/internal/pebbletest"
	"github.com/tollgate-edge/tollgate/internal/proctest"
	"github.com/tollgate-edge/tollgate/internal/redistest"
)

// tlsConfig is the [server] and [acme] configuration of an instance that
// gets its certificates from ca.
func acmeSection(ca *pebbletest.CA, extra string) string {
	return fmt.Sprintf(`[acme]
ca = %q
ca_root = %q
email = "ops@example.test"
%s
`, ca.DirectoryURL, ca.APIRootsFile, extra)
}

const httpsServer = `https = "127.0.0.1:0"`

// startHTTPS runs the binary with [server] https and certificates on demand
// from a Pebble CA that validates everything; tail adds config sections. It
// returns the instance and the roots that verify its certificates.
func startHTTPS(t *testing.T, tail string) (*instance, *x509.CertPool) {
	t.Helper()
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	return startTollgateFull(t, t.TempDir(), httpsServer, "", acmeSection(ca, "")+tail), roots
}

// httpsGet fetches https://host/path from the instance's HTTPS listener on a
// new connection, trusting only roots; proto is "h2" or "http/1.1".
func (in *instance) httpsGet(roots *x509.CertPool, host, path, proto string) (*http.Response, string, error) {
	return httpsGetAt(in.https, roots, host, path, proto)
}

// httpsGetAt is httpsGet on the listener at addr.
func httpsGetAt(addr string, roots *x509.CertPool, host, path, proto string) (*http.Response, string, error) {
	cfg := &tls.Config{RootCAs: roots, ServerName: host, NextProtos: []string{proto}}
	tr := &http.Transport{
		TLSClientConfig: cfg, DisableKeepAlives: true, ForceAttemptHTTP2: proto == "h2",
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	if proto != "h2" {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := c.Get("https://" + host + path)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// handshake opens a TLS connection with the given SNI ("" sends none) and
// reports the handshake's error.
func (in *instance) handshake(roots *x509.CertPool, sni string) error {
	cfg := &tls.Config{RootCAs: roots, ServerName: sni}
	if sni == "" {
		cfg.InsecureSkipVerify = true // no name to verify: only the refusal matters
	}
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	c, err := d.Dial("tcp", in.https)
	if err == nil {
		c.Close()
	}
	return err
}

func (in *instance) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v, sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// TestHTTPSOnDemand is the whole on-demand story against a real ACME CA
// (Pebble): a first HTTPS request to a freshly attached domain gets a
// certificate, later ones reuse it, a restart reuses the stored one without
// contacting the CA, and names tollgate would not serve (unknown, no SNI, 300
// random subdomains, past the org's daily limit) are refused without any
// ACME request.
func TestHTTPSOnDemand(t *testing.T) {
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	siteDir := filepath.Join(dir, "site")
	os.MkdirAll(siteDir, 0o755)
	os.WriteFile(filepath.Join(siteDir, "index.html"), []byte("<h1>secure home</h1>"), 0o644)
	acmeConf := acmeSection(ca, "org_certs_per_day = 2")
	in := startTollgateFull(t, dir, httpsServer, "", acmeConf)
	if out, code := in.cli(t, "plan", "put", "big"); code != 0 {
		t.Fatal(out)
	}
	in.addSite(t, "shop", "big", siteDir, "shop.test", "b.shop.test", "c.shop.test")

	// First request: issued on demand, over h2 and h1.
	start := time.Now()
	resp, body, err := in.httpsGet(roots, "shop.test", "/", "h2")
	if err != nil {
		t.Fatalf("first HTTPS request: %v\n%s", err, in.stderr)
	}
	first := time.Since(start)
	if resp.StatusCode != 200 || body != "<h1>secure home</h1>" || resp.Proto != "HTTP/2.0" {
		t.Fatalf("first HTTPS request: %s %s %q", resp.Proto, resp.Status, body)
	}
	if leaf := resp.TLS.PeerCertificates[0]; leaf.Subject.CommonName != "shop.test" && !contains(leaf.DNSNames, "shop.test") {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
	if ca.Orders() != 1 || ca.Certificates() != 1 {
		t.Fatalf("after the first request the CA saw %d orders, %d certificates", ca.Orders(), ca.Certificates())
	}
	start = time.Now()
	resp, _, err = in.httpsGet(roots, "shop.test", "/", "http/1.1")
	if err != nil || resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" {
		t.Fatalf("second HTTPS request (h1): %v %v", resp, err)
	}
	t.Logf("first request (issuance) %v, second (cached) %v", first, time.Since(start))
	if ca.Orders() != 1 {
		t.Fatalf("second request made an order: %d", ca.Orders())
	}

	// Plain HTTP redirects to HTTPS, keeping path and query.
	nc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+in.http+"/a/b?x=1", nil)
	req.Host = "shop.test"
	hresp, err := nc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	_, httpsPort, _ := net.SplitHostPort(in.https)
	if want := "https://shop.test:" + httpsPort + "/a/b?x=1"; hresp.StatusCode != 308 || hresp.Header.Get("Location") != want {
		t.Fatalf("plain HTTP: %d Location %q, want 308 %q", hresp.StatusCode, hresp.Header.Get("Location"), want)
	}
	if resp, _ := in.get(t, "unknown.test", "/"); resp.StatusCode != 404 {
		t.Fatalf("plain HTTP for an unknown host: %d, want 404", resp.StatusCode)
	}

	// Refusals: none of them reaches the CA.
	requestsBefore := ca.Requests()
	start = time.Now()
	refused := []string{"", "unknown.test", "localhost"}
	for i := range 300 {
		refused = append(refused, fmt.Sprintf("r%d-%x.shop.test", i, time.Now().UnixNano()))
	}
	for _, sni := range refused {
		if err := in.handshake(roots, sni); err == nil {
			t.Fatalf("handshake with SNI %q succeeded", sni)
		}
	}
	t.Logf("%d refused handshakes took %v", len(refused), time.Since(start))
	if got := ca.Requests(); got != requestsBefore {
		t.Fatalf("refused names made %d ACME requests", got-requestsBefore)
	}
	if got := in.metric(t, "tollgate_acme_ondemand_refusals_total"); got < float64(len(refused)) {
		t.Fatalf("refusals metric %v, want ≥ %d", got, len(refused))
	}

	// The org may get 2 new certificates a day: b.shop.test is the second,
	// c.shop.test is refused before any ACME request.
	if _, _, err := in.httpsGet(roots, "b.shop.test", "/", "h2"); err != nil {
		t.Fatalf("second name of the org: %v", err)
	}
	orders := ca.Orders()
	if _, _, err := in.httpsGet(roots, "c.shop.test", "/", "h2"); err == nil {
		t.Fatal("third name of the org in a day was served")
	}
	if ca.Orders() != orders || orders != 2 {
		t.Fatalf("org limit: orders %d then %d, want 2 and no more", orders, ca.Orders())
	}
	if got := in.metric(t, `tollgate_acme_ondemand_refusals_total{reason="org_limit"}`); got != 1 {
		t.Fatalf("org_limit refusals %v, want 1", got)
	}

	// GET /v1/certs through the CLI.
	out, code := in.cli(t, "--json", "certs")
	if code != 0 {
		t.Fatalf("admin certs: %s", out)
	}
	var certs []struct {
		Names    []string  `json:"names"`
		Issuer   string    `json:"issuer"`
		NotAfter time.Time `json:"not_after"`
	}
	if err := json.Unmarshal([]byte(out), &certs); err != nil {
		t.Fatalf("admin certs --json: %v\n%s", err, out)
	}
	if len(certs) != 2 || !contains(certs[1].Names, "shop.test") || certs[1].Issuer == "" || time.Until(certs[1].NotAfter) < 24*time.Hour {
		t.Fatalf("admin certs: %+v", certs)
	}
	if table, _ := in.cli(t, "certs"); !strings.Contains(table, "shop.test") || !strings.Contains(table, "EXPIRES") {
		t.Fatalf("admin certs table:\n%s", table)
	}

	// A restart serves the stored certificate without an order.
	start = time.Now()
	in.stop(t)
	t.Logf("stop took %v", time.Since(start))
	requestsBefore, orders = ca.Requests(), ca.Orders()
	in = startTollgateFull(t, dir, httpsServer, "", acmeConf)
	defer in.stop(t)
	if resp, body, err := in.httpsGet(roots, "shop.test", "/", "h2"); err != nil || resp.StatusCode != 200 || body != "<h1>secure home</h1>" {
		t.Fatalf("after restart: %v %v", resp, err)
	}
	if ca.Orders() != orders || ca.Certificates() != 2 {
		t.Fatalf("after restart the CA saw %d new orders", ca.Orders()-orders)
	}
	t.Logf("ACME requests after the restart: %d (orders: 0)", ca.Requests()-requestsBefore)
}

// TestTwoNodesShareOneCertificate: two tollgate processes sharing Redis get
// one certificate between them for the same name, however the first
// handshakes race.
func TestTwoNodesShareOneCertificate(t *testing.T) {
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	var nodes []*instance
	for range 2 {
		dir := t.TempDir()
		in := startTollgateFull(t, dir, httpsServer, fmt.Sprintf("redis = %q", "redis://"+rs.Addr()), acmeSection(ca, ""))
		defer in.stop(t)
		nodes = append(nodes, in)
	}
	// One registry in Redis: registered on the first node, served by both.
	nodes[0].addSite(t, "shop", "free", nodes[0].siteDir(t, "shared"), "shared.test")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	waitFor(t, func() bool {
		req, _ := http.NewRequest("GET", "http://"+nodes[1].http+"/", nil)
		req.Host = "shared.test"
		r, err := noRedirect.Do(req)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusPermanentRedirect // routed (and sent to HTTPS)
	})
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := nodes[i%2].httpsGet(roots, "shared.test", "/", "h2")
			if err == nil && (resp.StatusCode != 200 || body != "shared") {
				err = fmt.Errorf("%s %q", resp.Status, body)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d to node %d: %v\n%s", i, i%2, err, nodes[i%2].stderr)
		}
	}
	if ca.Orders() != 1 || ca.Certificates() != 1 {
		t.Fatalf("two nodes made %d orders for %d certificates, want 1", ca.Orders(), ca.Certificates())
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestPagesHTTPSOnDemand: {owner}.{pages_domain} gets a certificate on
// demand when the owner exists in Gitea (a user or an organization), and an
// owner Gitea does not know is refused without any ACME request, whatever
// number of times it is asked.
func TestPagesHTTPSOnDemand(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "carol")
	gs.CreateRepo(t, "carol", "pages")
	gs.PutFile(t, "carol", "pages", "main", "index.html", []byte("<h1>carol over https</h1>"))
	gs.CreateOrg(t, "team")
	gs.WaitRaw(t, "carol", "pages", "main", "index.html")
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("E2E_GITEA_TOKEN", gs.Token())
	in := startTollgateFull(t, t.TempDir(), httpsServer, "", fmt.Sprintf(`[sites]
pages_domain = "pages.test"
gitea_url = %q
gitea_token = "env:E2E_GITEA_TOKEN"
gitea_timeout = "3s"
`, gs.URL())+acmeSection(ca, ""))
	defer in.stop(t)

	resp, body, err := in.httpsGet(roots, "carol.pages.test", "/", "h2")
	if err != nil || resp.StatusCode != 200 || body != "<h1>carol over https</h1>" {
		t.Fatalf("carol.pages.test over https: %v %v %q\n%s", resp, err, body, in.stderr)
	}
	if err := in.handshake(roots, "team.pages.test"); err != nil {
		t.Fatalf("an organization's pages host: %v", err)
	}
	orders, giteaBefore := ca.Orders(), in.metric(t, "tollgate_acme_ondemand_refusals_total")
	for range 50 {
		if err := in.handshake(roots, "ghost.pages.test"); err == nil {
			t.Fatal("a pages host of an unknown owner got a certificate")
		}
	}
	if ca.Orders() != orders || orders != 2 {
		t.Fatalf("orders %d then %d, want 2 and no more", orders, ca.Orders())
	}
	if got := in.metric(t, `tollgate_acme_ondemand_refusals_total{reason="unknown_owner"}`); got != 50 || giteaBefore != 0 {
		t.Fatalf("unknown_owner refusals %v (before: %v), want 50", got, giteaBefore)
	}
}

// validatingCA starts a Pebble that really validates: it resolves every
// name to 127.0.0.1 through a loopback DNS server and connects to httpPort
// (HTTP-01) and httpsPort (TLS-ALPN-01).
func validatingCA(t *testing.T, httpPort, httpsPort int) (*pebbletest.CA, *x509.CertPool) {
	t.Helper()
	dns := dnstest.Start(t)
	ca := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort, Resolver: dns.Addr()})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	return ca, roots
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := proctest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRealChallenges lets Pebble validate for real: it resolves the name
// through a loopback DNS server and connects to tollgate's own listeners,
// HTTP-01 on [server] http (through the redirecting listener's challenge
// hook) and TLS-ALPN-01 on [server] https (acme-tls/1 in the handshake).
func TestRealChallenges(t *testing.T) {
	for _, tc := range []struct{ name, disable string }{
		{"http-01", "disable_tls_alpn_challenge = true"},
		{"tls-alpn-01", "disable_http_challenge = true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			httpPort, httpsPort := freePort(t), freePort(t)
			ca, roots := validatingCA(t, httpPort, httpsPort)
			dir := t.TempDir()
			siteDir := filepath.Join(dir, "site")
			os.MkdirAll(siteDir, 0o755)
			os.WriteFile(filepath.Join(siteDir, "index.html"), []byte("validated"), 0o644)
			in := startTollgateFull(t, dir, fmt.Sprintf("http = \"127.0.0.1:%d\"\nhttps = \"127.0.0.1:%d\"", httpPort, httpsPort), "", acmeSection(ca, tc.disable))
			defer in.stop(t)
			in.addSite(t, "v", "free", siteDir, "valid.test")
			resp, body, err := in.httpsGet(roots, "valid.test", "/", "h2")
			if err != nil || resp.StatusCode != 200 || body != "validated" {
				t.Fatalf("after a real %s validation: %v %v %q\n%s", tc.name, resp, err, body, in.stderr)
			}
			if ca.Certificates() != 1 {
				t.Fatalf("certificates issued: %d", ca.Certificates())
			}
			if tc.name == "tls-alpn-01" {
				if got := in.metric(t, `tollgate_tls_handshakes_total{protocol="acme-tls/1"}`); got < 1 {
					t.Fatalf("no acme-tls/1 handshake counted (%v)", got)
				}
			}
		})
	}
}

// TestFailedValidationBacksOff: a verified domain whose validation fails
// (its HTTP-01 answer never reaches the CA) costs one order, not one per
// visitor: the name is refused for acme.failure_backoff.
func TestFailedValidationBacksOff(t *testing.T) {
	closedPort := freePort(t) // nothing listens there
	ca, roots := validatingCA(t, closedPort, closedPort)
	dir := t.TempDir()
	in := startTollgateFull(t, dir, httpsServer, "", acmeSection(ca, "failure_backoff = \"1h\""))
	defer in.stop(t)
	in.addSite(t, "v", "free", dir, "elsewhere.test")
	start := time.Now()
	if _, _, err := in.httpsGet(roots, "elsewhere.test", "/", "h2"); err == nil {
		t.Fatal("served without a valid certificate")
	}
	// certmagic tries each enabled challenge type once: one order each.
	orders := ca.Orders()
	if orders < 1 || orders > 2 {
		t.Fatalf("first failed issuance made %d orders\n%s", orders, in.stderr)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the visitor waited %v for a failed issuance", d)
	}
	for range 20 {
		if err := in.handshake(roots, "elsewhere.test"); err == nil {
			t.Fatal("handshake succeeded")
		}
	}
	if ca.Orders() != orders {
		t.Fatalf("visitors during the backoff made %d more orders", ca.Orders()-orders)
	}
	if got := in.metric(t, `tollgate_acme_ondemand_refusals_total{reason="recent_failure"}`); got < 20 {
		t.Fatalf("recent_failure refusals %v, want ≥ 20", got)
	}
	if got := in.metric(t, `tollgate_acme_certificates_failed_total{op="obtain"}`); got != 1 {
		t.Fatalf("failed obtains %v, want 1", got)
	}
	out, _ := in.cli(t, "certs")
	if !strings.Contains(out, "elsewhere.test") {
		t.Fatalf("admin certs does not show the failure:\n%s", out)
	}
}
