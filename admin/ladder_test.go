package admin

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
)

// newLadderEnv is the admin API over a real registry and Billing on bbolt
// with plans basic (rank 1), pro (rank 2, a 14-day trial) and business
// (rank 3), and a fake clock for Billing.
func newLadderEnv(t *testing.T) (*testEnv, *clocktest.Clock) {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC))
	e, _ := newBillingEnv(t, billing.Config{Plans: []billing.PlanConfig{
		{Name: "basic", Rank: 1}, {Name: "pro", Rank: 2, TrialDays: 14}, {Name: "business", Rank: 3}}}, clock.Now)
	return e, clock
}

// TestOperatorPlanLadder: the operator moves an org up freely; down (or
// sideways) only with force, else 409 with the plan-downgrade problem
// type; every move is an event with the operator as actor.
func TestOperatorPlanLadder(t *testing.T) {
	e, _ := newLadderEnv(t)
	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"pro","state":"active"}`)
	for _, tc := range []struct {
		name, body string
		status     int
		plan       string
		cause      string // of the plan event recorded
	}{
		{"up", `{"plan":"business"}`, http.StatusOK, "business", "admin API"},
		{"down refused", `{"plan":"basic"}`, http.StatusConflict, "business", ""},
		{"down refused with force false", `{"plan":"basic","force":false}`, http.StatusConflict, "business", ""},
		{"down forced", `{"plan":"basic","force":true}`, http.StatusOK, "basic", "admin API (forced downgrade)"},
		{"up again", `{"plan":"pro"}`, http.StatusOK, "pro", "admin API"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before OrgEvents
			e.must(t, http.StatusOK, "GET", "/v1/orgs/acme/events", "").json(t, &before)
			r := e.call(t, "PATCH", "/v1/orgs/acme", tc.body)
			if tc.status != http.StatusOK {
				p := checkProblem(t, r, tc.status)
				if p.Type != ProblemTypePlanDowngrade || p.Code != reason.PlanDowngradeNotAllowed || !strings.Contains(p.Detail, "force") {
					t.Fatalf("problem %+v, want type %s naming force", p, ProblemTypePlanDowngrade)
				}
			} else if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if o := e.reg.Snapshot().Orgs.Get("acme"); o.Plan != tc.plan {
				t.Fatalf("plan %q, want %q", o.Plan, tc.plan)
			}
			var after OrgEvents
			e.must(t, http.StatusOK, "GET", "/v1/orgs/acme/events", "").json(t, &after)
			added := after.Events[len(before.Events):]
			if tc.cause == "" {
				if len(added) != 0 {
					t.Fatalf("a refused change recorded %+v", added)
				}
				return
			}
			if len(added) == 0 || added[0].Field != "plan" || added[0].To != tc.plan || added[0].Actor != billing.ActorOperator || added[0].Cause != tc.cause {
				t.Fatalf("events %+v, want a plan event to %s, cause %q", added, tc.plan, tc.cause)
			}
		})
	}

	// The CLI: refused without --force (exit 1, the problem's title), done with it.
	g := []string{"--addr", e.srv.URL, "--token", testToken}
	if code, _, stderr := runCLI(append(g, "org", "set", "acme", "--plan", "basic")...); code != 1 || !strings.Contains(stderr, "Plan downgrade not allowed") {
		t.Fatalf("org set down without --force: exit %d, %s", code, stderr)
	}
	if code, out, stderr := runCLI(append(g, "org", "set", "acme", "--plan", "basic", "--force")...); code != 0 || !strings.Contains(out, "basic") {
		t.Fatalf("org set --force: exit %d, %s%s", code, out, stderr)
	}
}

// TestCreateOrgTrial: an org created on a plan with trial_days is
// trialing until trial_ends_at; an explicit state other than trialing
// starts no trial.
func TestCreateOrgTrial(t *testing.T) {
	e, clock := newLadderEnv(t)
	for _, tc := range []struct {
		body, state string
		trial       bool
	}{
		{`{"id":"a","plan":"pro"}`, "trialing", true},
		{`{"id":"b","plan":"pro","state":"trialing"}`, "trialing", true},
		{`{"id":"c","plan":"pro","state":"active"}`, "active", false},
		{`{"id":"d","plan":"basic"}`, "active", false},
	} {
		var o sites.Org
		e.must(t, http.StatusCreated, "POST", "/v1/orgs", tc.body).json(t, &o)
		want := time.Time{}
		if tc.trial {
			want = clock.Now().Add(14 * 24 * time.Hour)
		}
		if o.State != tc.state || !o.TrialEndsAt.Time().Equal(want) {
			t.Errorf("%s: state %s, trial ends %v; want %s, %v", tc.body, o.State, o.TrialEndsAt, tc.state, want)
		}
	}
}
