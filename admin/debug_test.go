package admin

import "testing"

func TestPprof(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	if r := e.callWith(t, "GET", "/debug/pprof/heap", "", nil); r.status != 401 {
		t.Errorf("heap profile without a token: %d, want 401", r.status)
	}
	r := e.call(t, "GET", "/debug/pprof/heap?debug=1", "")
	if r.status != 200 || len(r.body) == 0 {
		t.Errorf("heap profile: %d, %d bytes", r.status, len(r.body))
	}
	r = e.call(t, "GET", "/debug/pprof/goroutine", "")
	if r.status != 200 || len(r.body) == 0 {
		t.Errorf("goroutine profile: %d, %d bytes", r.status, len(r.body))
	}
	checkProblem(t, e.call(t, "GET", "/debug/pprof/nothing", ""), 404)
}
