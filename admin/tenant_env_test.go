package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/tollgate-edge/tollgate/tokens"
)

// tenantEnv is the API over a real registry on a bbolt file, served twice
// on loopback: the private admin listener (Handler) and the tenant API's
// (APIHandler). Org acme (plan "one", sites www and shop, domain
// www.acme.example) and org beta (plan "one", site blog, domain
// blog.beta.example); plan "pub" is public. Tokens: acme's with every
// scope (all), acme's read-only (read), beta's with every scope (beta).
type tenantEnv struct {
	admin, api *testEnv
	st         *store.Bolt
	reg        *sites.Registry
	tokens     *tokens.Tokens
	clock      *clocktest.Clock
	secrets    map[string]string       // all, read, beta → secret
	ids        map[string]string       // all, read, beta → token id
	records    map[string]tokens.Token // by id, as created
}

func newTenantEnv(t *testing.T) *tenantEnv {
	return newTenantEnvWith(t, nil)
}

// newTenantEnvWith builds the env and lets extra change the server's
// options.
func newTenantEnvWith(t *testing.T, extra func(*Options)) *tenantEnv {
	t.Helper()
	ctx := context.Background()
	e := &tenantEnv{st: storetest.Open(t), clock: clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
		secrets: map[string]string{}, ids: map[string]string{}, records: map[string]tokens.Token{}}
	var err error
	if e.reg, err = sites.New(ctx, e.st); err != nil {
		t.Fatal(err)
	}
	if e.tokens, err = tokens.New(e.st, tokens.Options{Now: e.clock.Now}); err != nil {
		t.Fatal(err)
	}
	usage := store.NewBoltUsage(storetest.Open(t))
	opts := Options{Metrics: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Tokens: e.tokens, Usage: usage, SiteUsage: usage}
	if extra != nil {
		extra(&opts)
	}
	s, err := New(Config{Token: testToken}, e.reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	adm, api := httptest.NewServer(s.Handler()), httptest.NewServer(s.APIHandler())
	t.Cleanup(adm.Close)
	t.Cleanup(api.Close)
	e.admin = &testEnv{srv: adm, reg: e.reg}
	e.api = &testEnv{srv: api, reg: e.reg}

	a := e.admin
	a.must(t, 201, "PUT", "/v1/plans/one", `{"sites":5,"domains":5}`)
	a.must(t, 201, "PUT", "/v1/plans/pub", `{"sites":1,"public":true}`)
	for _, org := range []string{"acme", "beta"} {
		a.must(t, 201, "POST", "/v1/orgs", `{"id":"`+org+`","plan":"one"}`)
	}
	for org, ids := range map[string][]string{"acme": {"www", "shop"}, "beta": {"blog"}} {
		for _, id := range ids {
			a.must(t, 201, "POST", "/v1/orgs/"+org+"/sites", `{"id":"`+id+`","source":{"type":"upstream","url":"https://origin.`+org+`.example"}}`)
		}
	}
	a.must(t, 201, "POST", "/v1/sites/www/domains", `{"domain":"www.acme.example"}`)
	a.must(t, 201, "POST", "/v1/sites/blog/domains", `{"domain":"blog.beta.example"}`)
	for name, spec := range map[string]tokens.Spec{
		"all":  {Org: "acme", Name: "all", Scopes: tokens.AllScopes, CreatedBy: tokens.CreatorOperator},
		"read": {Org: "acme", Name: "read", Scopes: []tokens.Scope{tokens.Read}, CreatedBy: tokens.CreatorOperator},
		"beta": {Org: "beta", Name: "all", Scopes: tokens.AllScopes, CreatedBy: tokens.CreatorOperator},
	} {
		tok, secret, err := e.tokens.Create(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		e.secrets[name], e.ids[name], e.records[tok.ID] = secret, tok.ID, tok
	}
	return e
}

// as sends a request to env with the named token ("" sends none, "admin"
// the admin token, anything else a secret of e.secrets or a raw token).
func (e *tenantEnv) as(t *testing.T, env *testEnv, token, method, path, body string) response {
	t.Helper()
	h := map[string]string{"Content-Type": "application/json"}
	switch {
	case token == "admin":
		h["Authorization"] = "Bearer " + testToken
	case e.secrets[token] != "":
		h["Authorization"] = "Bearer " + e.secrets[token]
	case token != "":
		h["Authorization"] = "Bearer " + token
	}
	return env.callWith(t, method, path, body, h)
}

// orgState is everything the registry and the token store hold of org,
// as JSON: what a request of another org must leave alone.
func (e *tenantEnv) orgState(t *testing.T, org string) string {
	t.Helper()
	snap := e.reg.Snapshot()
	state := map[string]any{"org": snap.Orgs.Get(org)}
	for _, sid := range snap.SitesOf(org) {
		state["site "+sid] = snap.Sites.Get(sid)
		for _, d := range snap.DomainsOf(sid) {
			state["domain "+d] = snap.Domains.Get(d)
		}
	}
	list, err := e.tokens.List(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	for i := range list {
		list[i].LastUsedAt = nil // the other org's own requests use its token
	}
	state["tokens"] = list
	b, err := json.Marshal(state)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
