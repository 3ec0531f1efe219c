package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-edge/tollgate/internal/storetest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/sites"
)

const testToken = "test-token-0123456789abcdef"

type testEnv struct {
	srv     *httptest.Server
	reg     *sites.Registry
	metrics *prometheus.Registry
	// readToken is an org token with the read scope, where the fixture
	// makes one.
	readToken string
}

// newTestEnv serves the admin API over a fresh registry on a temp bbolt file.
func newTestEnv(t *testing.T, cfg Config, ready func(context.Context) error) *testEnv {
	t.Helper()
	st := storetest.Open(t)
	reg, err := sites.New(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	metrics := prometheus.NewRegistry()
	var checks []Check
	if ready != nil {
		checks = []Check{{Name: "test", Fatal: true, Run: ready}}
	}
	s, err := New(cfg, reg, Options{
		Metrics: metrics,
		Checks:  checks,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &testEnv{srv: srv, reg: reg, metrics: metrics}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// call sends one request with the test token.
func (e *testEnv) call(t *testing.T, method, path, body string) response {
	t.Helper()
	return e.callWith(t, method, path, body, map[string]string{"Authorization": "Bearer " + testToken})
}

func (e *testEnv) callWith(t *testing.T, method, path, body string, header map[string]string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// must sends a request and fails the test unless it gets want.
func (e *testEnv) must(t *testing.T, want int, method, path, body string) response {
	t.Helper()
	r := e.call(t, method, path, body)
	if r.status != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, want, r.body)
	}
	if want != http.StatusNoContent {
		if ct := r.header.Get("Content-Type"); ct != contentTypeJSON {
			t.Fatalf("%s %s: Content-Type %q, want %q", method, path, ct, contentTypeJSON)
		}
	}
	return r
}

// checkProblem asserts r is a problem+json with the given status.
func checkProblem(t *testing.T, r response, status int) Problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != contentTypeProblem {
		t.Fatalf("Content-Type %q, want %q", ct, contentTypeProblem)
	}
	var p Problem
	r.json(t, &p)
	if p.Status != status || p.Title == "" || p.Type == "" || p.Code == "" {
		t.Fatalf("bad problem %+v", p)
	}
	return p
}

func TestHappyPath(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)

	pro := `{"egress_bytes":1073741824,"storage_bytes":16777216,"sites":2,"domains":3,"throttle_bps":131072,"hard_limit_percent":150,"grace_period":"72h"}`
	r := e.must(t, http.StatusCreated, "PUT", "/v1/plans/pro", pro)
	if loc := r.header.Get("Location"); loc != "/v1/plans/pro" {
		t.Errorf("Location %q", loc)
	}
	var plan sites.Plan
	r.json(t, &plan)
	if plan.Name != "pro" || plan.Sites != 2 || plan.GracePeriod != sites.Duration(72*60*60*1e9) {
		t.Errorf("plan %+v", plan)
	}
	e.must(t, http.StatusOK, "PUT", "/v1/plans/pro", strings.Replace(pro, "{", `{"name":"pro",`, 1))
	var plans PlanList
	e.must(t, http.StatusOK, "GET", "/v1/plans", "").json(t, &plans)
	if len(plans.Plans) != 2 || plans.Plans[0].Name != "free" || plans.Plans[1].Name != "pro" {
		t.Errorf("plans %+v", plans)
	}
	e.must(t, http.StatusOK, "GET", "/v1/plans/pro", "")

	r = e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"zeta","name":"Zeta","plan":"free"}`)
	if loc := r.header.Get("Location"); loc != "/v1/orgs/zeta" {
		t.Errorf("Location %q", loc)
	}
	var org sites.Org
	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","name":"Acme","plan":"pro"}`).json(t, &org)
	if org.State != sites.StateActive || org.CreatedAt.IsZero() {
		t.Errorf("org %+v", org)
	}
	var orgs OrgList
	e.must(t, http.StatusOK, "GET", "/v1/orgs", "").json(t, &orgs)
	if len(orgs.Orgs) != 2 || orgs.Orgs[0].ID != "acme" || orgs.Orgs[1].ID != "zeta" {
		t.Errorf("orgs %+v", orgs)
	}

	var site sites.Site
	e.must(t, http.StatusCreated, "POST", "/v1/orgs/acme/sites", `{"id":"blog","source":{"type":"dir","path":"/srv/blog"}}`).json(t, &site)
	if site.Org != "acme" || site.Source.Path != "/srv/blog" {
		t.Errorf("site %+v", site)
	}
	e.must(t, http.StatusCreated, "POST", "/v1/orgs/acme/sites", `{"id":"app","source":{"type":"upstream","url":"http://127.0.0.1:3000"}}`)

	for in, want := range map[string]string{"Bücher.Example.": "xn--bcher-kva.example", "WWW.Example.COM.": "www.example.com"} {
		var d sites.Domain
		r := e.must(t, http.StatusCreated, "POST", "/v1/sites/blog/domains", `{"domain":"`+in+`"}`)
		r.json(t, &d)
		if d.Name != want || d.Site != "blog" || d.Status != sites.DomainVerified {
			t.Errorf("attach %q: %+v, want %q", in, d, want)
		}
		if loc := r.header.Get("Location"); loc != "/v1/domains/"+want {
			t.Errorf("Location %q", loc)
		}
	}
	var d sites.Domain
	e.must(t, http.StatusOK, "GET", "/v1/domains/B%C3%BCcher.example", "").json(t, &d)
	if d.Name != "xn--bcher-kva.example" {
		t.Errorf("domain %+v", d)
	}

	var od OrgDetail
	e.must(t, http.StatusOK, "GET", "/v1/orgs/acme", "").json(t, &od)
	if od.ID != "acme" || !reflect.DeepEqual(od.Sites, []string{"app", "blog"}) {
		t.Errorf("org detail %+v", od)
	}
	var sd SiteDetail
	e.must(t, http.StatusOK, "GET", "/v1/sites/blog", "").json(t, &sd)
	if sd.ID != "blog" || !reflect.DeepEqual(sd.Domains, []string{"www.example.com", "xn--bcher-kva.example"}) {
		t.Errorf("site detail %+v", sd)
	}
	e.must(t, http.StatusOK, "GET", "/v1/sites/app", "").json(t, &sd)
	if sd.Domains == nil || len(sd.Domains) != 0 {
		t.Errorf("domains of app: %#v, want []", sd.Domains)
	}

	e.must(t, http.StatusOK, "PATCH", "/v1/orgs/acme", `{"state":"suspended","name":"Acme Inc"}`).json(t, &org)
	if org.State != sites.StateSuspended || org.Name != "Acme Inc" || org.Plan != "pro" {
		t.Errorf("patched org %+v", org)
	}

	e.must(t, http.StatusNoContent, "DELETE", "/v1/domains/WWW.example.com", "")
	checkProblem(t, e.call(t, "GET", "/v1/domains/www.example.com", ""), http.StatusNotFound)
	e.must(t, http.StatusNoContent, "DELETE", "/v1/sites/blog", "")
	checkProblem(t, e.call(t, "GET", "/v1/domains/xn--bcher-kva.example", ""), http.StatusNotFound)
	e.must(t, http.StatusNoContent, "DELETE", "/v1/sites/app", "")
	e.must(t, http.StatusNoContent, "DELETE", "/v1/orgs/acme", "")
	p := checkProblem(t, e.call(t, "GET", "/v1/orgs/acme", ""), http.StatusNotFound)
	if p.Detail != `org "acme" does not exist` {
		t.Errorf("detail %q", p.Detail)
	}
}

func TestErrors(t *testing.T) {
	type req struct{ method, path, body string }
	auth := map[string]string{"Authorization": "Bearer " + testToken}
	withAuth := func(kv ...string) map[string]string {
		h := map[string]string{"Authorization": "Bearer " + testToken}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	orgAcme := req{"POST", "/v1/orgs", `{"id":"acme","plan":"free"}`}
	oneSite := req{"PUT", "/v1/plans/one", `{"sites":1,"domains":1}`}
	orgOne := req{"POST", "/v1/orgs", `{"id":"acme","plan":"one"}`}
	siteA := req{"POST", "/v1/orgs/acme/sites", `{"id":"a","source":{"type":"dir","path":"/srv/a"}}`}
	big := `{"id":"acme","plan":"free","name":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`

	tests := []struct {
		name      string
		setup     []req
		method    string
		path      string
		body      string
		header    map[string]string
		want      int
		wantType  string
		wantLimit string
		wantAllow string
	}{
		{name: "no token", method: "GET", path: "/v1/orgs", want: 401},
		{name: "wrong token", method: "GET", path: "/v1/orgs", header: map[string]string{"Authorization": "Bearer " + testToken + "x"}, want: 401},
		{name: "basic auth", method: "GET", path: "/v1/orgs", header: map[string]string{"Authorization": "Basic " + testToken}, want: 401},
		{name: "no token on write", method: "POST", path: "/v1/orgs", body: orgAcme.body, want: 401},
		{name: "invalid JSON", method: "POST", path: "/v1/orgs", body: `{"id":`, header: auth, want: 400},
		{name: "not an object", method: "POST", path: "/v1/orgs", body: `[1]`, header: auth, want: 400},
		{name: "wrong field type", method: "PUT", path: "/v1/plans/p", body: `{"sites":"many"}`, header: auth, want: 400},
		{name: "bad duration", method: "PUT", path: "/v1/plans/p", body: `{"grace_period":"soon"}`, header: auth, want: 400},
		{name: "empty body", method: "POST", path: "/v1/orgs", header: auth, want: 400},
		{name: "two objects", method: "POST", path: "/v1/orgs", body: orgAcme.body + orgAcme.body, header: auth, want: 400},
		{name: "unknown field", method: "POST", path: "/v1/orgs", body: `{"id":"acme","plan":"free","color":"red"}`, header: auth, want: 400},
		{name: "unknown nested field", setup: []req{orgAcme}, method: "POST", path: "/v1/orgs/acme/sites", body: `{"id":"a","source":{"type":"dir","path":"/a","x":1}}`, header: auth, want: 400},
		{name: "plan name mismatch", method: "PUT", path: "/v1/plans/p", body: `{"name":"q"}`, header: auth, want: 400},
		{name: "wrong content type", method: "POST", path: "/v1/orgs", body: orgAcme.body, header: withAuth("Content-Type", "text/plain"), want: 415},
		{name: "json content type ok", method: "POST", path: "/v1/orgs", body: orgAcme.body, header: withAuth("Content-Type", "application/json; charset=utf-8"), want: 201},
		{name: "body too large", method: "POST", path: "/v1/orgs", body: big, header: auth, want: 413},
		{name: "unknown plan", method: "POST", path: "/v1/orgs", body: `{"id":"acme","plan":"gold"}`, header: auth, want: 422},
		{name: "invalid org id", method: "POST", path: "/v1/orgs", body: `{"id":"Acme!","plan":"free"}`, header: auth, want: 422},
		{name: "invalid plan", method: "PUT", path: "/v1/plans/p", body: `{"hard_limit_percent":50}`, header: auth, want: 422},
		{name: "relative dir", setup: []req{orgAcme}, method: "POST", path: "/v1/orgs/acme/sites", body: `{"id":"a","source":{"type":"dir","path":"srv"}}`, header: auth, want: 422},
		{name: "bad domain", setup: []req{orgAcme, siteA}, method: "POST", path: "/v1/sites/a/domains", body: `{"domain":"10.0.0.1"}`, header: auth, want: 422},
		{name: "duplicate org", setup: []req{orgAcme}, method: "POST", path: "/v1/orgs", body: orgAcme.body, header: auth, want: 409},
		{name: "unknown org", method: "GET", path: "/v1/orgs/nope", header: auth, want: 404},
		{name: "site of unknown org", method: "POST", path: "/v1/orgs/nope/sites", body: siteA.body, header: auth, want: 404},
		{name: "unknown plan get", method: "GET", path: "/v1/plans/nope", header: auth, want: 404},
		{name: "unknown site", method: "DELETE", path: "/v1/sites/nope", header: auth, want: 404},
		{
			name:   "duplicate domain across sites",
			setup:  []req{{"PUT", "/v1/plans/big", `{}`}, {"POST", "/v1/orgs", `{"id":"acme","plan":"big"}`}, siteA, {"POST", "/v1/orgs/acme/sites", `{"id":"b","source":{"type":"dir","path":"/srv/b"}}`}, {"POST", "/v1/sites/a/domains", `{"domain":"example.com"}`}},
			method: "POST", path: "/v1/sites/b/domains", body: `{"domain":"EXAMPLE.com."}`, header: auth, want: 409,
		},
		{
			name: "site limit", setup: []req{oneSite, orgOne, siteA},
			method: "POST", path: "/v1/orgs/acme/sites", body: `{"id":"b","source":{"type":"dir","path":"/srv/b"}}`, header: auth,
			want: 409, wantType: ProblemTypeLimit, wantLimit: "sites",
		},
		{
			name: "domain limit", setup: []req{oneSite, orgOne, siteA, {"POST", "/v1/sites/a/domains", `{"domain":"a.example"}`}},
			method: "POST", path: "/v1/sites/a/domains", body: `{"domain":"b.example"}`, header: auth,
			want: 409, wantType: ProblemTypeLimit, wantLimit: "domains",
		},
		{name: "delete org with sites", setup: []req{orgAcme, siteA}, method: "DELETE", path: "/v1/orgs/acme", header: auth, want: 409},
		{name: "unknown route", method: "GET", path: "/v1/nothing", header: auth, want: 404},
		{name: "unknown route outside v1", method: "GET", path: "/index.html", want: 404},
		{name: "wrong method", method: "DELETE", path: "/v1/plans", header: auth, want: 405, wantAllow: "GET, HEAD"},
		{name: "wrong method with wildcard", method: "POST", path: "/v1/domains/example.com", header: auth, want: 405, wantAllow: "DELETE, GET, HEAD"},
		{name: "wrong method without token", method: "POST", path: "/healthz", want: 405, wantAllow: "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, Config{}, nil)
			for _, s := range tt.setup {
				r := e.call(t, s.method, s.path, s.body)
				if r.status >= 300 {
					t.Fatalf("setup %s %s: %d %s", s.method, s.path, r.status, r.body)
				}
			}
			r := e.callWith(t, tt.method, tt.path, tt.body, tt.header)
			if tt.want < 300 {
				if r.status != tt.want {
					t.Fatalf("status %d, want %d: %s", r.status, tt.want, r.body)
				}
				return
			}
			p := checkProblem(t, r, tt.want)
			if tt.wantType != "" && p.Type != tt.wantType {
				t.Errorf("type %q, want %q", p.Type, tt.wantType)
			}
			if p.Limit != tt.wantLimit {
				t.Errorf("limit %q, want %q", p.Limit, tt.wantLimit)
			}
			if tt.wantLimit != "" && (p.Max != 1 || p.Title != "Plan limit reached: "+tt.wantLimit) {
				t.Errorf("limit problem %+v", p)
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
			if tt.want == 401 && r.header.Get("WWW-Authenticate") != `Bearer realm="tollgate-admin"` {
				t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
			if tt.want == 413 && !strings.Contains(p.Detail, "1048576") {
				t.Errorf("detail %q does not name the limit", p.Detail)
			}
		})
	}
}

func TestHealthAndReadiness(t *testing.T) {
	notReady := errors.New("store: secret path /var/lib/x is locked")
	tests := []struct {
		name   string
		ready  func(context.Context) error
		path   string
		want   int
		wantIn string
	}{
		{name: "healthz", path: "/healthz", want: 200, wantIn: "ok"},
		{name: "readyz default", path: "/readyz", want: 200, wantIn: "ready"},
		{name: "readyz ok", ready: func(context.Context) error { return nil }, path: "/readyz", want: 200, wantIn: "ready"},
		{name: "readyz failing", ready: func(context.Context) error { return notReady }, path: "/readyz", want: 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t, Config{}, tt.ready)
			r := e.callWith(t, "GET", tt.path, "", nil)
			if tt.want == 503 {
				p := checkProblem(t, r, 503)
				if strings.Contains(string(r.body), "secret") {
					t.Errorf("readiness error leaked: %+v", p)
				}
				return
			}
			if r.status != tt.want || strings.TrimSpace(string(r.body)) != tt.wantIn {
				t.Errorf("got %d %q, want %d %q", r.status, r.body, tt.want, tt.wantIn)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	e.must(t, 200, "GET", "/v1/plans", "")
	e.must(t, 200, "GET", "/v1/plans/free", "")
	e.callWith(t, "GET", "/v1/plans/free", "", nil) // not public: 404 without a token
	e.call(t, "GET", "/v1/orgs/some-raw-id", "")
	e.call(t, "GET", "/nope", "")
	r := e.callWith(t, "GET", "/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("GET /metrics: %d", r.status)
	}
	body := string(r.body)
	for _, want := range []string{
		`tollgate_admin_requests_total{code="200",route="GET /v1/plans"} 1`,
		`tollgate_admin_requests_total{code="200",route="GET /v1/plans/{name}"} 1`,
		`tollgate_admin_requests_total{code="404",route="GET /v1/plans/{name}"} 1`,
		`tollgate_admin_requests_total{code="404",route="GET /v1/orgs/{id}"} 1`,
		`tollgate_admin_requests_total{code="404",route="unmatched"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s\n%s", want, body)
		}
	}
	if strings.Contains(body, "some-raw-id") {
		t.Errorf("/metrics has a raw path as a label value")
	}
}

// TestConcurrentLimit creates sites in parallel under a plan allowing three:
// exactly three succeed, the rest hit the limit.
func TestConcurrentLimit(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	e.must(t, 201, "PUT", "/v1/plans/three", `{"sites":3}`)
	e.must(t, 201, "POST", "/v1/orgs", `{"id":"acme","plan":"three"}`)
	const n = 12
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := `{"id":"s` + string(rune('a'+i)) + `","source":{"type":"dir","path":"/srv"}}`
			codes[i] = e.call(t, "POST", "/v1/orgs/acme/sites", body).status
		})
	}
	wg.Wait()
	count := map[int]int{}
	for _, c := range codes {
		count[c]++
	}
	if count[201] != 3 || count[409] != n-3 {
		t.Errorf("statuses %v, want 3×201 and %d×409", count, n-3)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{name: "ok", cfg: Config{Token: testToken}},
		{name: "no token", cfg: Config{}, wantErr: []string{"server.admin_token: required"}},
		{name: "short token", cfg: Config{Token: "short"}, wantErr: []string{"server.admin_token: must be at least 16"}},
		{name: "token with space", cfg: Config{Token: "0123456789 abcdef"}, wantErr: []string{"server.admin_token: must not contain whitespace"}},
		{name: "all at once", cfg: Config{MaxBodyBytes: -1}, wantErr: []string{"server.admin_token", "server.admin_max_body_bytes"}},
		{name: "rate off", cfg: Config{Token: testToken, RequestsPerSecond: -1}},
		{name: "negative rate", cfg: Config{Token: testToken, RequestsPerSecond: -2}, wantErr: []string{"server.admin_requests_per_second"}},
		{name: "no burst", cfg: Config{Token: testToken, RequestsPerSecond: 5, Burst: -1}, wantErr: []string{"server.admin_burst"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %v", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestNewRequiresCollaborators(t *testing.T) {
	if _, err := New(Config{Token: testToken}, nil, Options{}); err == nil ||
		!strings.Contains(err.Error(), "registry") || !strings.Contains(err.Error(), "Metrics") {
		t.Errorf("New without registry and metrics: %v", err)
	}
}
