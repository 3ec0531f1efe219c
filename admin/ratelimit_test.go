package admin

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/ratelimit"
	"github.com/tollgate-edge/tollgate/reason"
)

// TestAdminRateLimit: past server.admin_requests_per_second a token gets
// 429 problems with Retry-After and the RateLimit fields; requests without
// a valid token are counted by address, so they cannot use up the token's
// budget; health and metrics are never limited.
func TestAdminRateLimit(t *testing.T) {
	e := newTestEnv(t, Config{RequestsPerSecond: 1, Burst: 3}, nil)
	noToken := map[string]string{}
	wrongToken := map[string]string{"Authorization": "Bearer wrong-token-0123456789abcdef"}
	for i, step := range []struct {
		header map[string]string // nil: the valid token
		path   string
		want   int
	}{
		{noToken, "/v1/orgs", 401},
		{wrongToken, "/v1/orgs", 401},
		{noToken, "/v1/orgs", 401},
		{wrongToken, "/v1/orgs", 429}, // the address's budget, whatever the token
		{nil, "/v1/plans", 200},       // the valid token has its own
		{nil, "/v1/orgs", 200},
		{nil, "/v1/plans", 200},
		{nil, "/v1/plans", 429},
		{noToken, "/healthz", 200},
		{noToken, "/metrics", 200},
	} {
		var r response
		if step.header == nil {
			r = e.call(t, "GET", step.path, "")
		} else {
			r = e.callWith(t, "GET", step.path, "", step.header)
		}
		if r.status != step.want {
			t.Fatalf("step %d: GET %s: %d, want %d; %s", i, step.path, r.status, step.want, r.body)
		}
		if r.status != 429 {
			continue
		}
		p := checkProblem(t, r, 429)
		if p.Type != ProblemTypeRateLimited || p.Code != reason.RateLimited {
			t.Errorf("step %d: problem type %q", i, p.Type)
		}
		for name, want := range map[string]string{"Retry-After": "1", "RateLimit-Policy": `"admin";q=1;w=1`, "RateLimit": `"admin";r=0;t=1`} {
			if got := r.header.Get(name); got != want {
				t.Errorf("step %d: %s %q, want %q", i, name, got, want)
			}
		}
	}
	if got := testutil.ToFloat64(ratelimit.Refused(e.metrics, ratelimit.KindAdmin)); got != 2 {
		t.Errorf(`tollgate_ratelimit_refused_requests_total{kind="admin"} = %v, want 2`, got)
	}
}

// TestAdminRateLimitOff: -1 turns the limit off.
func TestAdminRateLimitOff(t *testing.T) {
	e := newTestEnv(t, Config{RequestsPerSecond: -1}, nil)
	for range 200 {
		e.must(t, http.StatusOK, "GET", "/v1/plans", "")
	}
}

// TestClientWaitsWhenRateLimited: the client sends a request refused with
// 429 again after its Retry-After, body and all.
func TestClientWaitsWhenRateLimited(t *testing.T) {
	e := newTestEnv(t, Config{RequestsPerSecond: 1, Burst: 1}, nil)
	c := NewClient(e.srv.URL, testToken)
	ctx := context.Background()
	start := time.Now()
	if _, err := c.ListPlans(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateOrg(ctx, OrgCreate{ID: "acme", Plan: "free"}); err != nil {
		t.Fatalf("a refused request sent again: %v", err)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("took %v; the second request should have waited for its token", took)
	}
	if e.reg.Snapshot().Orgs.Get("acme") == nil {
		t.Error("the org was not created")
	}
}
