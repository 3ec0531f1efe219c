package admin

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/tollgate-edge/tollgate/tokens"
)

// giteaDown is a Gitea that cannot be asked.
type giteaDown struct{}

func (giteaDown) Pushed(context.Context, gitea.Push) error {
	return fmt.Errorf("asking for the branch head: %w", gitea.ErrUpstream)
}

const codesHookSecret = "hook-secret-0123456789"

// codesEnv serves the admin API on loopback for TestProblemCodes: a
// registry on a real Redis (which can lose it), a plan of one site with org
// acme (site www) and org beta (site blog), usage on a bbolt store that
// closeUsage closes, Gitea down, a failing non-fatal readiness check
// unless notReady, and a 1 KiB body limit.
func codesEnv(t *testing.T, notReady bool) (e *testEnv, rs *redistest.Server, closeUsage func()) {
	t.Helper()
	ctx := context.Background()
	rs = redistest.Start(t)
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
	usageDB := storetest.Open(t)
	usage := store.NewBoltUsage(usageDB)
	check := Check{Name: "test", Fatal: notReady, Run: func(context.Context) error { return errors.New("down") }}
	s, err := New(Config{Token: testToken, MaxBodyBytes: 1024}, reg, Options{
		Metrics: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Checks: []Check{check}, Usage: usage, SiteUsage: usage,
		Gitea: giteaDown{}, GiteaWebhookSecret: codesHookSecret, Tokens: ts,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	e = &testEnv{srv: srv, reg: reg}
	e.must(t, http.StatusCreated, "PUT", "/v1/plans/one", `{"sites":1}`)
	for _, org := range []string{"acme", "beta"} {
		e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"`+org+`","plan":"one"}`)
	}
	e.must(t, http.StatusCreated, "POST", "/v1/orgs/acme/sites", `{"id":"www","source":{"type":"upstream","url":"http://127.0.0.1:9"}}`)
	e.must(t, http.StatusCreated, "POST", "/v1/orgs/beta/sites", `{"id":"blog","source":{"type":"upstream","url":"http://127.0.0.1:9"}}`)
	if _, err := reg.Reserve(sites.ReservedName{Name: "pages.example", Subdomains: true, Key: "sites.pages_domain"}); err != nil {
		t.Fatal(err)
	}
	if _, e.readToken, err = ts.Create(ctx, tokens.Spec{Org: "acme", Name: "ci", Scopes: []tokens.Scope{tokens.Read}}); err != nil {
		t.Fatal(err)
	}
	return e, rs, func() { usageDB.Close() }
}

// TestProblemCodes: every code the admin API sends, each from a real
// request to a real server on loopback, with its status; package reason
// lists no admin code this table lacks.
func TestProblemCodes(t *testing.T) {
	redistest.SkipShort(t)
	e, _, _ := codesEnv(t, false)
	auth := map[string]string{"Authorization": "Bearer " + testToken}
	withType := func(ct string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": ct}
	}
	body := `{"ref":"refs/heads/main","repository":{"name":"site","owner":{"login":"alice"}}}`
	mac := hmac.New(sha256.New, []byte(codesHookSecret))
	mac.Write([]byte(body))
	signed := map[string]string{"X-Gitea-Signature": hex.EncodeToString(mac.Sum(nil)), "Content-Type": "application/json"}

	type request struct {
		method, path, body string
		header             map[string]string
	}
	tests := []struct {
		code   reason.Code
		status int
		req    request
		// env, when set, serves the request instead of e.
		env func(t *testing.T) *testEnv
	}{
		{reason.BadRequest, 400, request{"POST", "/v1/orgs", `{"id":`, auth}, nil},
		{reason.Unauthorized, 401, request{"GET", "/v1/orgs", "", nil}, nil},
		{reason.Unauthorized, 401, request{"POST", "/hooks/gitea", body, map[string]string{"X-Gitea-Signature": "00"}}, nil},
		{reason.InsufficientScope, 403, request{"DELETE", "/v1/sites/www", "", map[string]string{"Authorization": "Bearer " + e.readToken}}, nil},
		{reason.NotFound, 404, request{"GET", "/v1/orgs/nobody", "", auth}, nil},
		{reason.RouteNotFound, 404, request{"GET", "/v1/nothing", "", auth}, nil},
		{reason.MethodNotAllowed, 405, request{"PUT", "/v1/orgs/acme", "{}", auth}, nil},
		{reason.Conflict, 409, request{"POST", "/v1/orgs", `{"id":"acme","plan":"one"}`, auth}, nil},
		{reason.PlanLimit, 409, request{"POST", "/v1/orgs/acme/sites", `{"id":"two","source":{"type":"upstream","url":"http://127.0.0.1:9"}}`, auth}, nil},
		{reason.ReservedDomain, 409, request{"POST", "/v1/sites/www/domains", `{"domain":"alice.pages.example"}`, auth}, nil},
		{reason.BodyTooLarge, 413, request{"POST", "/v1/orgs", `{"id":"` + strings.Repeat("a", 2048) + `"}`, auth}, nil},
		{reason.UnsupportedMediaType, 415, request{"POST", "/v1/orgs", `{}`, withType("text/plain")}, nil},
		{reason.Invalid, 422, request{"POST", "/v1/orgs", `{"id":"Not An Id","plan":"one"}`, auth}, nil},
		{reason.SiteNotInOrg, 422, request{"GET", "/v1/usage?org=acme&site=blog", "", auth}, nil},
		{reason.Internal, 500, request{"GET", "/v1/usage?org=acme", "", auth}, func(t *testing.T) *testEnv {
			e, _, closeUsage := codesEnv(t, false)
			closeUsage()
			return e
		}},
		{reason.UpstreamUnavailable, 502, request{"POST", "/hooks/gitea", body, signed}, nil},
		{reason.NotConfigured, 503, request{"GET", "/v1/certs", "", auth}, nil},
		{reason.NotReady, 503, request{"GET", "/readyz", "", nil}, func(t *testing.T) *testEnv {
			e, _, _ := codesEnv(t, true)
			return e
		}},
		{reason.RegistryUnavailable, 503, request{"POST", "/v1/orgs", `{"id":"late","plan":"one"}`, auth}, func(t *testing.T) *testEnv {
			e, rs, _ := codesEnv(t, false)
			rs.RestartEmpty()
			if _, err := e.reg.Reload(context.Background()); !errors.Is(err, sites.ErrRegistryLost) {
				t.Fatalf("Reload after Redis restarted empty: %v; want ErrRegistryLost", err)
			}
			return e
		}},
	}
	// PLAN_DOWNGRADE_NOT_ALLOWED needs billing's ladder (TestOperatorPlanLadder),
	// the CREDIT_CODE_* codes its credit codes (TestCreditCodeRoutes).
	covered := []reason.Code{reason.PlanDowngradeNotAllowed, reason.CreditCodeInvalid, reason.CreditCodeExpired,
		reason.CreditCodeUsedUp, reason.CreditCodeAlreadyRedeemed}
	for _, tt := range tests {
		t.Run(string(tt.code)+" "+tt.req.method+" "+tt.req.path, func(t *testing.T) {
			env := e
			if tt.env != nil {
				env = tt.env(t)
			}
			p := checkProblem(t, env.callWith(t, tt.req.method, tt.req.path, tt.req.body, tt.req.header), tt.status)
			if p.Code != tt.code {
				t.Fatalf("code %q, want %q (%+v)", p.Code, tt.code, p)
			}
		})
		covered = append(covered, tt.code)
	}
	for _, entry := range reason.All() {
		if entry.Sender == reason.SentByAdmin && !slices.Contains(covered, entry.Code) {
			t.Errorf("%s is an admin code with no row in this test", entry.Code)
		}
	}
}

// TestProblemCodesMatchReasons: problemFor gives each admin code the status
// package reason documents for it.
func TestProblemCodesMatchReasons(t *testing.T) {
	status := map[reason.Code]int{}
	for _, e := range reason.All() {
		if prev, ok := status[e.Code]; ok {
			t.Errorf("%s listed twice (%d, %d)", e.Code, prev, e.Status)
		}
		status[e.Code] = e.Status
	}
	for _, err := range []error{
		errBadRequest, errUnauthorized, sites.ErrNotFound, errNoRoute, errMethod, sites.ErrConflict,
		&sites.LimitError{Limit: "sites", Max: 1}, sites.ErrReserved, &http.MaxBytesError{Limit: 1},
		errMediaType, sites.ErrInvalid, errSiteNotInOrg, errors.New("boom"), gitea.ErrUpstream,
		errNotConfig, errNotReady, sites.ErrRegistryLost, errInsufficientScope,
	} {
		p, _ := problemFor(err)
		if want, ok := status[p.Code]; !ok || want != p.Status {
			t.Errorf("%v: %d %s; package reason says %d", err, p.Status, p.Code, want)
		}
	}
}

// TestProblemCodesDocumented: docs/errors.md has a row per code of package
// reason with its status, and the Problem schema of docs/openapi.json lists
// exactly those codes, in the same order.
func TestProblemCodesDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) > 3 && strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			rows[strings.Trim(strings.TrimSpace(cells[1]), "`")] = strings.TrimSpace(cells[2])
		}
	}
	var codes []string
	for _, e := range reason.All() {
		codes = append(codes, string(e.Code))
		if got := rows[string(e.Code)]; got != strconv.Itoa(e.Status) {
			t.Errorf("docs/errors.md: %s has status %q, want %d", e.Code, got, e.Status)
		}
		delete(rows, string(e.Code))
	}
	for code := range rows {
		t.Errorf("docs/errors.md documents %s, which package reason does not list", code)
	}

	doc, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	var api struct {
		Components struct {
			Schemas struct {
				Problem struct {
					Required   []string `json:"required"`
					Properties struct {
						Code struct {
							Enum []string `json:"enum"`
						} `json:"code"`
					} `json:"properties"`
				} `json:"Problem"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(doc, &api); err != nil {
		t.Fatal(err)
	}
	p := api.Components.Schemas.Problem
	if !slices.Equal(p.Properties.Code.Enum, codes) || !slices.Contains(p.Required, "code") {
		t.Errorf("openapi Problem.code: enum %v (required: %v), want %v, required", p.Properties.Code.Enum, p.Required, codes)
	}
}
