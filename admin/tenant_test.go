package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/tokens"
)

// fillPath puts values in the {params} of a documented path: own (acme's
// records and token) or other (beta's), or missing (names nothing).
func fillPath(path, which string, e *tenantEnv) string {
	vals := map[string]map[string]string{
		"own":     {"org": "acme", "site": "www", "domain": "www.acme.example", "token": e.ids["read"], "name": "one"},
		"other":   {"org": "beta", "site": "blog", "domain": "blog.beta.example", "token": e.ids["beta"], "name": "one"},
		"missing": {"org": "nobody", "site": "nosite", "domain": "nothing.example", "token": "0123456789abcdef", "name": "none"},
	}[which]
	idKind := "org"
	if strings.HasPrefix(path, "/v1/sites/") {
		idKind = "site"
	}
	r := strings.NewReplacer("{id}", vals[idKind], "{domain}", vals["domain"], "{token_id}", vals["token"], "{name}", vals["name"])
	path = r.Replace(path)
	if path == "/v1/usage" {
		path += "?org=" + vals["org"]
	}
	return path
}

// tenantBodies are valid bodies of the routes that take one.
var tenantBodies = map[string]string{
	"POST /v1/orgs/{id}/sites":    `{"id":"new-site","source":{"type":"upstream","url":"https://origin.new.example"}}`,
	"POST /v1/orgs/{id}/tokens":   `{"name":"made","scopes":["read"]}`,
	"PATCH /v1/sites/{id}":        `{"active":false}`,
	"POST /v1/sites/{id}/domains": `{"domain":"new.example"}`,
}

// TestTenantConfinedToOrg: over every route of docs/openapi.json, on both
// listeners, a token of org acme with every scope changes and reads
// nothing of org beta: a route it may use answers beta's id, site, domain
// or token 404 NOT_FOUND with the very problem a name that does not exist
// gets (no existence oracle), and leaves beta's records and tokens as they
// were; the operator's routes answer it 404 ROUTE_NOT_FOUND, even with
// acme's own ids; with its own ids, a route it may use is neither 401,
// 403 nor 404.
func TestTenantConfinedToOrg(t *testing.T) {
	routes := documentedRoutes(t)
	names := slices.Sorted(func(yield func(string) bool) {
		for r := range routes {
			if !yield(r) {
				return
			}
		}
	})
	for _, route := range names {
		op := routes[route]
		method, path, _ := strings.Cut(route, " ")
		if op.Scope == "none" || !op.hasScheme("adminToken") {
			continue // the plan catalog (TestPublicPlanCatalog), health, metrics, hooks
		}
		for _, listener := range []string{"api", "admin"} {
			t.Run(listener+" "+route, func(t *testing.T) {
				e := newTenantEnv(t)
				env := map[string]*testEnv{"api": e.api, "admin": e.admin}[listener]
				body := tenantBodies[route]
				if op.Scope == "" {
					if !op.hasScheme("adminToken") || op.hasScheme("tenantToken") {
						t.Fatalf("an operator route documents %v", *op.Security)
					}
					p := checkProblem(t, e.as(t, env, "all", method, fillPath(path, "own", e), body), 404)
					if p.Code != reason.RouteNotFound {
						t.Fatalf("operator route with an org token: %s, want %s", p.Code, reason.RouteNotFound)
					}
					return
				}
				if !op.hasScheme("tenantToken") {
					t.Fatalf("x-tollgate-scope %q but no tenantToken in security", op.Scope)
				}
				before := e.orgState(t, "beta")
				missing := checkProblem(t, e.as(t, env, "all", method, fillPath(path, "missing", e), body), 404)
				other := checkProblem(t, e.as(t, env, "all", method, fillPath(path, "other", e), body), 404)
				want := missing.Detail
				for _, k := range []string{"nobody:beta", "nosite:blog", "nothing.example:blog.beta.example", "0123456789abcdef:" + e.ids["beta"]} {
					from, to, _ := strings.Cut(k, ":")
					want = strings.ReplaceAll(want, from, to)
				}
				if other.Code != reason.NotFound || other.Detail != want {
					t.Errorf("another org's: %s %q; one that does not exist: %s %q", other.Code, other.Detail, missing.Code, want)
				}
				if after := e.orgState(t, "beta"); after != before {
					t.Errorf("org beta changed:\n%s\n%s", before, after)
				}
				own := e.as(t, env, "all", method, fillPath(path, "own", e), body)
				if own.status == 401 || own.status == 403 || own.status == 404 {
					t.Errorf("own: %d %s", own.status, own.body)
				}
			})
		}
	}
}

// TestTenantCrossOrgQueries: the ways into another org that are not a
// path segment: a site of beta in acme's usage query, and a token of beta
// revoked under acme's path.
func TestTenantCrossOrgQueries(t *testing.T) {
	e := newTenantEnv(t)
	for _, tt := range []struct{ method, path, missing string }{
		{"GET", "/v1/usage?org=acme&site=blog", "/v1/usage?org=acme&site=nosite"},
		{"DELETE", "/v1/orgs/acme/tokens/" + e.ids["beta"], "/v1/orgs/acme/tokens/0123456789abcdef"},
		{"GET", "/v1/usage?org=beta&group_by=site", "/v1/usage?org=nobody&group_by=site"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			before := e.orgState(t, "beta")
			p := checkProblem(t, e.as(t, e.api, "all", tt.method, tt.path, ""), 404)
			m := checkProblem(t, e.as(t, e.api, "all", tt.method, tt.missing, ""), 404)
			if p.Code != reason.NotFound || m.Code != reason.NotFound {
				t.Errorf("codes %s and %s, want %s", p.Code, m.Code, reason.NotFound)
			}
			if e.orgState(t, "beta") != before {
				t.Error("org beta changed")
			}
		})
	}
	if p := checkProblem(t, e.as(t, e.api, "all", "GET", "/v1/usage?period=2026-03", ""), 400); p.Code != reason.BadRequest {
		t.Errorf("every org's totals with an org token: %s", p.Code)
	}
}

// TestTenantScopes: a read token reads but changes nothing (403
// INSUFFICIENT_SCOPE, whatever the target); a token creates tokens with
// at most its own scopes.
func TestTenantScopes(t *testing.T) {
	e := newTenantEnv(t)
	ctx := context.Background()
	_, adminOnly, err := e.tokens.Create(ctx, tokens.Spec{Org: "acme", Name: "admin", Scopes: []tokens.Scope{tokens.Admin}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		token, method, path, body string
		want                      int
	}{
		{"read", "GET", "/v1/orgs/acme", "", 200},
		{"read", "GET", "/v1/sites/www", "", 200},
		{"read", "GET", "/v1/orgs/acme/sites", "", 200},
		{"read", "GET", "/v1/domains/www.acme.example", "", 200},
		{"read", "GET", "/v1/usage?org=acme&group_by=site", "", 200},
		{"read", "PATCH", "/v1/sites/www", `{"active":false}`, 403},
		{"read", "PATCH", "/v1/sites/blog", `{"active":false}`, 403}, // another org's: the scope is checked first
		{"read", "DELETE", "/v1/sites/www", "", 403},
		{"read", "POST", "/v1/orgs/acme/sites", tenantBodies["POST /v1/orgs/{id}/sites"], 403},
		{"read", "POST", "/v1/sites/www/domains", `{"domain":"x.example"}`, 403},
		{"read", "DELETE", "/v1/domains/www.acme.example", "", 403},
		{"read", "GET", "/v1/orgs/acme/tokens", "", 403},
		{adminOnly, "GET", "/v1/orgs/acme/tokens", "", 200},
		{adminOnly, "GET", "/v1/orgs/acme", "", 403},
		{adminOnly, "POST", "/v1/orgs/acme/tokens", `{"name":"up","scopes":["admin","write"]}`, 403},
		{adminOnly, "POST", "/v1/orgs/acme/tokens", `{"name":"same","scopes":["admin"]}`, 201},
	} {
		r := e.as(t, e.api, tt.token, tt.method, tt.path, tt.body)
		if r.status != tt.want {
			t.Errorf("%s %s %s: %d, want %d: %s", tt.token[:min(4, len(tt.token))], tt.method, tt.path, r.status, tt.want, r.body)
			continue
		}
		if tt.want == 403 {
			if p := checkProblem(t, r, 403); p.Code != reason.InsufficientScope {
				t.Errorf("%s %s: code %s", tt.method, tt.path, p.Code)
			}
		}
	}
	var made TokenCreated
	e.as(t, e.api, "all", "POST", "/v1/orgs/acme/tokens", `{"name":"child","scopes":["read"]}`).json(t, &made)
	if made.CreatedBy != "token:"+e.ids["all"] || !strings.HasPrefix(made.Secret, tokens.Prefix) {
		t.Errorf("token made by a token: %+v", made.Token)
	}
}

// TestTokenRevokedAndExpired: a revoked token and an expired one get 401,
// on both listeners; so does the token of a deleted org.
func TestTokenRevokedAndExpired(t *testing.T) {
	e := newTenantEnv(t)
	exp := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
	var short TokenCreated
	e.admin.must(t, 201, "POST", "/v1/orgs/acme/tokens", `{"name":"short","scopes":["read"],"expires_at":"`+exp+`"}`).json(t, &short)
	if r := e.as(t, e.api, short.Secret, "GET", "/v1/orgs/acme", ""); r.status != 200 {
		t.Fatalf("fresh token: %d %s", r.status, r.body)
	}
	e.clock.Add(time.Hour)
	for _, env := range []*testEnv{e.api, e.admin} {
		if p := checkProblem(t, e.as(t, env, short.Secret, "GET", "/v1/orgs/acme", ""), 401); p.Code != reason.Unauthorized {
			t.Errorf("expired: %s", p.Code)
		}
	}
	if r := e.as(t, e.api, "read", "GET", "/v1/orgs/acme", ""); r.status != 200 {
		t.Fatalf("before revoking: %d", r.status)
	}
	e.admin.must(t, 204, "DELETE", "/v1/orgs/acme/tokens/"+e.ids["read"], "")
	for _, env := range []*testEnv{e.api, e.admin} {
		checkProblem(t, e.as(t, env, "read", "GET", "/v1/orgs/acme", ""), 401)
	}
	checkProblem(t, e.admin.call(t, "DELETE", "/v1/orgs/acme/tokens/"+e.ids["read"], ""), 404)
	var list TokenList
	e.admin.must(t, 200, "GET", "/v1/orgs/acme/tokens", "").json(t, &list)
	for _, tok := range list.Tokens {
		if tok.ID == e.ids["read"] {
			t.Error("the revoked token is still listed")
		}
	}
	// A deleted org's tokens go with it; a new org of the same id does not
	// inherit them.
	e.admin.must(t, 204, "DELETE", "/v1/sites/blog", "")
	e.admin.must(t, 204, "DELETE", "/v1/orgs/beta", "")
	e.admin.must(t, 201, "POST", "/v1/orgs", `{"id":"beta","plan":"one"}`)
	checkProblem(t, e.as(t, e.api, "beta", "GET", "/v1/orgs/beta", ""), 401)
}

// TestTokenStoredHashed: neither the secret nor its random part is in the
// store; the SHA-256 of the secret is, and the answer of a creation is
// not cached.
func TestTokenStoredHashed(t *testing.T) {
	e := newTenantEnv(t)
	r := e.admin.must(t, 201, "POST", "/v1/orgs/acme/tokens", `{"name":"ci","scopes":["read","write"]}`)
	var made TokenCreated
	r.json(t, &made)
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
	}
	if len(made.Secret) != 85 || !strings.HasPrefix(made.Secret, "tgt_"+made.ID+"_") {
		t.Fatalf("secret %q", made.Secret)
	}
	random := strings.TrimPrefix(made.Secret, "tgt_"+made.ID+"_")
	sum := sha256Hex(made.Secret)
	e.as(t, e.api, made.Secret, "GET", "/v1/orgs/acme", "") // writes last use
	var sawHash bool
	for _, bucket := range tokens.Buckets {
		err := e.st.Scan(context.Background(), bucket, func(k, v []byte) error {
			for _, b := range [][]byte{k, v} {
				s := strings.ToLower(string(b))
				for name, secret := range map[string]string{"secret": made.Secret, "random part": random, "random part's first half": random[:32]} {
					if strings.Contains(s, strings.ToLower(secret)) {
						t.Errorf("%s/%s holds the %s", bucket, k, name)
					}
				}
				sawHash = sawHash || strings.Contains(s, sum)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !sawHash {
		t.Error("the SHA-256 of the secret is not stored")
	}
	if strings.Contains(string(e.admin.must(t, 200, "GET", "/v1/orgs/acme/tokens", "").body), random) {
		t.Error("the list shows a secret")
	}
}

// TestTokenLastUse: the last use is recorded, to the second, at most once
// a minute per token.
func TestTokenLastUse(t *testing.T) {
	e := newTenantEnv(t)
	lastUse := func() *time.Time {
		var list TokenList
		e.admin.must(t, 200, "GET", "/v1/orgs/acme/tokens", "").json(t, &list)
		for _, tok := range list.Tokens {
			if tok.ID == e.ids["read"] {
				return tok.LastUsedAt
			}
		}
		t.Fatal("token not listed")
		return nil
	}
	if at := lastUse(); at != nil {
		t.Fatalf("unused token has last use %v", at)
	}
	t0 := e.clock.Now()
	use := func() {
		if r := e.as(t, e.api, "read", "GET", "/v1/orgs/acme", ""); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	use()
	if at := lastUse(); at == nil || !at.Equal(t0) {
		t.Fatalf("last use %v, want %v", at, t0)
	}
	e.clock.Add(30 * time.Second)
	use()
	if at := lastUse(); !at.Equal(t0) {
		t.Fatalf("written again within a minute: %v", at)
	}
	e.clock.Add(31 * time.Second)
	use()
	if at := lastUse(); !at.Equal(t0.Add(61 * time.Second)) {
		t.Fatalf("last use %v after a minute, want %v", at, t0.Add(61*time.Second))
	}
}

// TestPublicPlanCatalog: without a token, GET /v1/plans lists the public
// plans only, on both listeners; a plan that is not public is 404
// without a token, readable by the org on it, and the operator sees all.
func TestPublicPlanCatalog(t *testing.T) {
	e := newTenantEnv(t)
	names := func(r response) []string {
		var pl PlanList
		r.json(t, &pl)
		var out []string
		for _, p := range pl.Plans {
			out = append(out, p.Name)
		}
		return out
	}
	for _, env := range []*testEnv{e.api, e.admin} {
		if got := names(e.as(t, env, "", "GET", "/v1/plans", "")); !slices.Equal(got, []string{"pub"}) {
			t.Errorf("catalog without a token: %v, want [pub]", got)
		}
		if got := names(e.as(t, env, "read", "GET", "/v1/plans", "")); !slices.Equal(got, []string{"pub"}) {
			t.Errorf("catalog with an org token: %v, want [pub]", got)
		}
		checkProblem(t, e.as(t, env, "", "GET", "/v1/plans/one", ""), 404)
		if r := e.as(t, env, "", "GET", "/v1/plans/pub", ""); r.status != 200 {
			t.Errorf("public plan without a token: %d", r.status)
		}
		if r := e.as(t, env, "read", "GET", "/v1/plans/one", ""); r.status != 200 {
			t.Errorf("the org's own plan: %d", r.status)
		}
		checkProblem(t, e.as(t, env, "wrong-token-0123456789abcdef", "GET", "/v1/plans", ""), 401)
	}
	if got := names(e.as(t, e.admin, "admin", "GET", "/v1/plans", "")); !slices.Equal(got, []string{"free", "one", "pub"}) {
		t.Errorf("operator: %v", got)
	}
}

// TestAdminTokenRefusedOnAPIListener: the operator's token is not
// accepted on the tenant API listener, only on the admin one.
func TestAdminTokenRefusedOnAPIListener(t *testing.T) {
	e := newTenantEnv(t)
	for _, path := range []string{"/v1/orgs", "/v1/orgs/acme", "/v1/backup"} {
		p := checkProblem(t, e.as(t, e.api, "admin", "GET", path, ""), 401)
		if p.Code != reason.Unauthorized {
			t.Errorf("%s: %s", path, p.Code)
		}
	}
	e.admin.must(t, 200, "GET", "/v1/orgs", "")
	for _, path := range []string{"/metrics", "/readyz", "/hooks/gitea"} {
		if r := e.as(t, e.api, "", "GET", path, ""); r.status != 404 && r.status != 405 {
			t.Errorf("%s on the API listener: %d", path, r.status)
		}
	}
}

// TestTenantRateLimit: each org token has its own budget of the admin
// limiter (keyed by its hash): one token past it gets 429, another does
// not.
func TestTenantRateLimit(t *testing.T) {
	e := newTenantEnv(t)
	// A second server over the same registry and tokens, limited.
	s, err := New(Config{Token: testToken, RequestsPerSecond: 1, Burst: 2}, e.reg, Options{
		Metrics: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tokens: e.tokens})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.APIHandler())
	t.Cleanup(srv.Close)
	api := &testEnv{srv: srv, reg: e.reg}
	codes := func(token string, n int) []int {
		var out []int
		for range n {
			out = append(out, e.as(t, api, token, "GET", "/v1/orgs/acme", "").status)
		}
		return out
	}
	if got := codes("all", 3); !slices.Equal(got, []int{200, 200, 429}) {
		t.Errorf("one token: %v, want [200 200 429]", got)
	}
	if got := codes("read", 1); !slices.Equal(got, []int{200}) {
		t.Errorf("another token: %v", got)
	}
	r := e.as(t, api, "all", "GET", "/v1/orgs/acme", "")
	if p := checkProblem(t, r, 429); p.Code != reason.RateLimited || r.header.Get("Retry-After") == "" {
		t.Errorf("429: %+v %v", p, r.header)
	}
}

// TestTenantDomainsPending: a domain a tenant attaches is pending, with
// the TXT record that proves it; the operator's is verified.
func TestTenantDomainsPending(t *testing.T) {
	e := newTenantEnv(t)
	var d DomainDetail
	r := e.as(t, e.api, "all", "POST", "/v1/sites/www/domains", `{"domain":"Shop.Acme.Example"}`)
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r.json(t, &d)
	want := []DNSRecord{{Type: "TXT", Name: "_tollgate.shop.acme.example", Value: "www"}}
	if d.Status != sites.DomainPending || d.Via != sites.ViaTenant || !slices.Equal(d.DNSRecords, want) {
		t.Errorf("tenant's domain: %+v", d)
	}
	if _, verified, _ := e.reg.DomainOrg("shop.acme.example"); verified {
		t.Error("a pending domain is verified for routing")
	}
	e.as(t, e.api, "all", "GET", "/v1/domains/www.acme.example", "").json(t, &d)
	if d.Status != sites.DomainVerified {
		t.Errorf("operator's domain: %+v", d)
	}
}

// TestTenantSiteSources: an org token creates upstream sites on https
// host names only, never a directory or a loopback upstream.
func TestTenantSiteSources(t *testing.T) {
	e := newTenantEnv(t)
	for i, tt := range []struct {
		source string
		want   int
	}{
		{`{"type":"upstream","url":"https://origin.acme.example"}`, 201},
		{`{"type":"dir","path":"/etc"}`, 422},
		{`{"type":"upstream","url":"http://origin.acme.example"}`, 422},
		{`{"type":"upstream","url":"https://127.0.0.1:9180"}`, 422},
		{`{"type":"upstream","url":"https://[::1]/"}`, 422},
		{`{"type":"upstream","url":"https://localhost/"}`, 422},
		{`{"type":"gitea","owner":"someone","repo":"site"}`, 422},
	} {
		r := e.as(t, e.api, "all", "POST", "/v1/orgs/acme/sites", `{"id":"s`+strconv.Itoa(i)+`","source":`+tt.source+`}`)
		if r.status != tt.want {
			t.Errorf("%s: %d, want %d: %s", tt.source, r.status, tt.want, r.body)
		}
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestOpenAPIScopesMatchRules: x-tollgate-scope and the security of each
// /v1 operation of docs/openapi.json say what the server's access rule
// for the route does: "none" and an anonymous requirement for a public
// route, no tenantToken for the operator's, and the very scope otherwise.
func TestOpenAPIScopesMatchRules(t *testing.T) {
	reg, err := sites.New(context.Background(), storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Token: testToken}, reg, Options{Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	documented := documentedRoutes(t)
	for pattern, rule := range s.rules {
		op, ok := documented[pattern]
		if !ok {
			continue // TestOpenAPIMatchesRoutes reports it
		}
		want := string(rule.scope)
		if rule.public {
			want = "none"
		}
		if op.Scope != want || op.anonymous() != rule.public || op.hasScheme("tenantToken") != (want != "") {
			t.Errorf("%s: documented scope %q (anonymous %v, tenantToken %v); the server's rule: %q",
				pattern, op.Scope, op.anonymous(), op.hasScheme("tenantToken"), want)
		}
	}
}
