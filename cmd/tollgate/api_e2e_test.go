package main

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/internal/pebbletest"
)

// TestTenantAPIListener runs the binary with [server] api on loopback: an
// org token made with `tollgate admin token create` reads its org there
// and nothing of another; the admin token is refused there and accepted
// on the admin listener; the plan catalog answers without a token.
func TestTenantAPIListener(t *testing.T) {
	in := startTollgateFull(t, t.TempDir(), `api = "127.0.0.1:0"`, "", "")
	if in.api == "" {
		t.Fatal("the start line names no api listener")
	}
	for _, args := range [][]string{
		{"plan", "put", "starter", "--sites", "2", "--public"},
		{"org", "create", "acme", "--plan", "starter"},
		{"org", "create", "beta", "--plan", "starter"},
	} {
		if out, code := in.cli(t, args...); code != 0 {
			t.Fatalf("%v: %d %s", args, code, out)
		}
	}
	out, code := in.cli(t, "token", "create", "acme", "--scope", "read,write", "--name", "ci", "--expires", "90d")
	secret := regexp.MustCompile(`tgt_[0-9a-f]{16}_[0-9a-f]{64}`).FindString(out)
	if code != 0 || secret == "" {
		t.Fatalf("token create: %d %s", code, out)
	}
	call := func(addr, token, path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tt := range []struct {
		addr, token, path string
		want              int
		wantIn            string
	}{
		{in.api, secret, "/v1/orgs/acme", 200, `"id":"acme"`},
		{in.api, secret, "/v1/orgs/beta", 404, "NOT_FOUND"},
		{in.api, secret, "/v1/orgs", 404, "ROUTE_NOT_FOUND"},
		{in.api, e2eToken, "/v1/orgs/acme", 401, "UNAUTHORIZED"},
		{in.admin, e2eToken, "/v1/orgs/acme", 200, `"id":"acme"`},
		{in.admin, secret, "/v1/orgs/acme", 200, `"id":"acme"`},
		{in.api, "", "/v1/plans", 200, `"name":"starter"`},
		{in.api, "", "/metrics", 404, ""},
	} {
		got, body := call(tt.addr, tt.token, tt.path)
		if got != tt.want || !strings.Contains(body, tt.wantIn) {
			t.Errorf("GET %s%s: %d %s; want %d with %q", tt.addr, tt.path, got, body, tt.want, tt.wantIn)
		}
	}
	if out, code := in.cli(t, "token", "list", "acme"); code != 0 || !strings.Contains(out, "ci") || strings.Contains(out, secret) {
		t.Fatalf("token list: %d %s", code, out)
	}

	// The console on the same listener: the token signs in (a session
	// cookie, never the token), the overview names the org.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm("http://"+in.api+"/console/signin", url.Values{"token": {secret}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		session = c
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || !session.HttpOnly || !session.Secure ||
		session.SameSite != http.SameSiteStrictMode || strings.Contains(session.Value, secret) {
		t.Fatalf("console sign-in: %d, cookie %+v", resp.StatusCode, session)
	}
	req, _ := http.NewRequest("GET", "http://"+in.api+"/console/", nil)
	req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "acme") || strings.Contains(string(page), secret) {
		t.Fatalf("console overview: %d\n%s", resp.StatusCode, page)
	}
}

// TestTenantAPIOverTLS: with api_tls the tenant listener serves the API and
// the console with a certificate for api_host from the same manager (a
// Pebble CA), over h2 and HTTP/1.1.
func TestTenantAPIOverTLS(t *testing.T) {
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	server := httpsServer + "\napi = \"127.0.0.1:0\"\napi_tls = true\napi_host = \"api.tollgate.test\""
	in := startTollgateFull(t, t.TempDir(), server, "", acmeSection(ca, ""))
	defer in.stop(t)
	for _, tc := range []struct{ proto, path, want string }{
		{"h2", "/v1/plans", `"plans"`},
		{"http/1.1", "/console/signin", "<form"},
	} {
		resp, body, err := httpsGetAt(in.api, roots, "api.tollgate.test", tc.path, tc.proto)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", tc.proto, tc.path, err, in.stderr)
		}
		if resp.StatusCode != 200 || !strings.Contains(body, tc.want) || resp.TLS.PeerCertificates[0].VerifyHostname("api.tollgate.test") != nil {
			t.Fatalf("%s %s: %d %q", tc.proto, tc.path, resp.StatusCode, body)
		}
		if tc.proto == "h2" && resp.ProtoMajor != 2 {
			t.Fatalf("negotiated %s, want h2", resp.Proto)
		}
	}
}
