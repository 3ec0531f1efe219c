package admin

import (
	"net/http"
	"slices"
	"testing"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestOverPlanAndSiteMarks: GET /v1/orgs/{id} lists what an org owns
// beyond its plan; PATCH /v1/sites/{id} marks a site active, inactive or
// unmarked, and the marks change the excess; bad marks are clear problems.
func TestOverPlanAndSiteMarks(t *testing.T) {
	e, _ := newBillingEnv(t, billing.Config{Plans: []billing.PlanConfig{{Name: "one", Sites: 1}, {Name: "many"}}}, nil)
	reg := e.reg

	e.must(t, http.StatusCreated, "POST", "/v1/orgs", `{"id":"acme","plan":"many"}`)
	dir := t.TempDir()
	for _, id := range []string{"a1", "a2"} {
		e.must(t, http.StatusCreated, "POST", "/v1/orgs/acme/sites", `{"id":"`+id+`","source":{"type":"dir","path":"`+dir+`"}}`)
	}
	overPlan := func() *billing.OverPlan {
		t.Helper()
		var d OrgDetail
		e.must(t, http.StatusOK, "GET", "/v1/orgs/acme", "").json(t, &d)
		return d.OverPlan
	}
	if op := overPlan(); op != nil {
		t.Fatalf("within its plan: %+v", op)
	}
	e.must(t, http.StatusOK, "PATCH", "/v1/orgs/acme", `{"plan":"one","force":true}`)
	if op := overPlan(); op == nil || !slices.Equal(op.Sites, []string{"a2"}) || op.Enforced {
		t.Fatalf("after the downgrade: %+v", op)
	}
	var site sites.Site
	e.must(t, http.StatusOK, "PATCH", "/v1/sites/a2", `{"active":true}`).json(t, &site)
	if site.Active == nil || !*site.Active {
		t.Fatalf("marked active: %+v", site)
	}
	if op := overPlan(); op == nil || !slices.Equal(op.Sites, []string{"a1"}) {
		t.Fatalf("a2 marked active: %+v", op)
	}
	e.must(t, http.StatusOK, "PATCH", "/v1/sites/a1", `{"active":false}`)
	if op := overPlan(); op != nil {
		t.Fatalf("a1 deactivated: %+v", op)
	}
	var unmarked sites.Site
	e.must(t, http.StatusOK, "PATCH", "/v1/sites/a1", `{"active":null}`).json(t, &unmarked)
	if unmarked.Active != nil || reg.Snapshot().Sites.Get("a1").Active != nil {
		t.Fatalf("unmarked: %+v", unmarked)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"PATCH", "/v1/sites/a1", `{}`, http.StatusBadRequest},
		{"PATCH", "/v1/sites/a1", `{"active":"yes"}`, http.StatusBadRequest},
		{"PATCH", "/v1/sites/a1", `{"active":true,"x":1}`, http.StatusBadRequest},
		{"PATCH", "/v1/sites/nobody", `{"active":true}`, http.StatusNotFound},
	} {
		checkProblem(t, e.call(t, tc.method, tc.path, tc.body), tc.status)
	}
}
