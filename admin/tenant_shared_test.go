package admin

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/dnstest"
	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/tollgate-edge/tollgate/tokens"
)

// TestTenantDomainProvenByDNS: a pending domain turns verified when its
// TXT record names the site, checked when it is read, through a real DNS
// server on loopback.
func TestTenantDomainProvenByDNS(t *testing.T) {
	dns := dnstest.Start(t)
	e := newTenantEnvWith(t, func(o *Options) {
		o.DomainProof = gitea.NewDNSVerifier(dns.Addr(), 0, gitea.DNSOptions{})
	})
	e.as(t, e.api, "all", "POST", "/v1/sites/www/domains", `{"domain":"shop.acme.example"}`)
	var d DomainDetail
	e.as(t, e.api, "read", "GET", "/v1/domains/shop.acme.example", "").json(t, &d)
	if d.Status != sites.DomainPending {
		t.Fatalf("without the record: %+v", d)
	}
	dns.SetTXT("_tollgate.shop.acme.example", "blog") // another site's name proves nothing
	e.as(t, e.api, "read", "GET", "/v1/domains/shop.acme.example", "").json(t, &d)
	if d.Status != sites.DomainPending {
		t.Fatalf("with another site's record: %+v", d)
	}
	dns.SetTXT("_tollgate.shop.acme.example", d.DNSRecords[0].Value)
	e.as(t, e.api, "read", "GET", "/v1/domains/shop.acme.example", "").json(t, &d)
	if d.Status != sites.DomainVerified || d.Via != sites.ViaTXT {
		t.Fatalf("with the record: %+v", d)
	}
	if _, verified, _ := e.reg.DomainOrg("shop.acme.example"); !verified {
		t.Error("the registry does not route the proven domain")
	}
}

// TestTokensSharedAcrossNodes: two nodes on one real Redis share the
// tokens: one created on the first authenticates on the second, and one
// revoked on the second is refused on the first at once.
func TestTokensSharedAcrossNodes(t *testing.T) {
	redistest.SkipShort(t)
	rs := redistest.Start(t)
	ctx := context.Background()
	node := func() *testEnv {
		rc := rs.NewClient(t)
		kv := store.NewRedisKV(rc, nil)
		reg, err := sites.New(ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		ts, err := tokens.New(kv, tokens.Options{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{Token: testToken}, reg, Options{Metrics: prometheus.NewRegistry(),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tokens: ts})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		return &testEnv{srv: srv, reg: reg}
	}
	a, b := node(), node()
	a.must(t, 201, "POST", "/v1/orgs", `{"id":"acme","plan":"free"}`)
	if _, err := b.reg.Reload(ctx); err != nil { // b learns of acme (the registry watch does this in tollgate)
		t.Fatal(err)
	}
	var made TokenCreated
	a.must(t, 201, "POST", "/v1/orgs/acme/tokens", `{"name":"ci","scopes":["read"]}`).json(t, &made)
	bearer := map[string]string{"Authorization": "Bearer " + made.Secret}
	if r := b.callWith(t, "GET", "/v1/orgs/acme", "", bearer); r.status != 200 {
		t.Fatalf("token of node a on node b: %d %s", r.status, r.body)
	}
	var list TokenList
	a.must(t, 200, "GET", "/v1/orgs/acme/tokens", "").json(t, &list)
	if len(list.Tokens) != 1 || list.Tokens[0].LastUsedAt == nil {
		t.Errorf("node a does not see node b's use: %+v", list.Tokens)
	}
	b.must(t, 204, "DELETE", "/v1/orgs/acme/tokens/"+made.ID, "")
	if r := a.callWith(t, "GET", "/v1/orgs/acme", "", bearer); r.status != 401 {
		t.Fatalf("revoked on node b, on node a: %d", r.status)
	}
}

// TestTokenCLI: tollgate admin token create, list and revoke.
func TestTokenCLI(t *testing.T) {
	e := newTenantEnv(t)
	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := RunCLI(append([]string{"--addr", e.admin.srv.URL, "--token", testToken}, args...), &out, &errb)
		return out.String() + errb.String(), code
	}
	out, code := run("token", "create", "acme", "--scope", "read,write", "--name", "ci", "--expires", "90d")
	secret := regexp.MustCompile(`tgt_[0-9a-f]{16}_[0-9a-f]{64}`).FindString(out)
	if code != 0 || secret == "" || !strings.Contains(out, "read,write") {
		t.Fatalf("create: %d %s", code, out)
	}
	id := secret[4:20]
	if r := e.as(t, e.api, secret, "PATCH", "/v1/sites/www", `{"active":true}`); r.status != 200 {
		t.Fatalf("the CLI's token: %d %s", r.status, r.body)
	}
	if out, code = run("token", "list", "acme"); code != 0 || !strings.Contains(out, id) || strings.Contains(out, secret[21:]) {
		t.Fatalf("list: %d %s", code, out)
	}
	if out, code = run("token", "revoke", "acme", id); code != 0 {
		t.Fatalf("revoke: %d %s", code, out)
	}
	if out, code = run("token", "create", "acme", "--scope", "read", "--name", "x", "--expires", "soon"); code != 2 {
		t.Fatalf("bad --expires: %d %s", code, out)
	}
	if out, code = run("token", "create", "acme", "--scope", "root", "--name", "x"); code != 1 || !strings.Contains(out, "scopes") {
		t.Fatalf("bad scope: %d %s", code, out)
	}
}
