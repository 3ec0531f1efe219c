package admin

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/storetest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// newUsageEnv serves the admin API with usage read from a bbolt usage store
// filled with known batches.
func newUsageEnv(t *testing.T) *testEnv {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	sink := store.NewBoltUsage(st)
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	for i, b := range []struct {
		t        string
		org      string
		egress   int64
		requests int64
	}{
		{"2026-10-31T23:10:00Z", "acme", 1, 1},
		{"2026-11-01T00:10:00Z", "acme", 100, 2},
		{"2026-11-01T00:50:00Z", "acme", 50, 1},
		{"2026-11-02T13:00:00Z", "acme", 1000, 10},
		{"2026-11-02T13:00:00Z", "beta", 7, 1},
		{"2026-11-03T13:00:00Z", "cyan", 3, 1},
		{"2026-11-04T13:00:00Z", "dune", 4, 1},
	} {
		err := sink.Apply(ctx, &meter.Batch{Node: "n", Seq: uint64(i + 1), Time: at(b.t),
			Deltas: []meter.Delta{{Org: b.org, Site: "s", Values: meter.Values{EgressBytes: b.egress, Requests: b.requests}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	metrics := prometheus.NewRegistry()
	s, err := New(Config{Token: testToken}, reg, Options{Metrics: metrics, Usage: sink, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &testEnv{srv: srv, reg: reg, metrics: metrics}
}

func TestUsageSeries(t *testing.T) {
	e := newUsageEnv(t)
	tests := []struct {
		query       string
		points      int
		first       int64 // egress of the first point
		total       int64
		totalReq    int64
		firstStart  string
		problemCode int
	}{
		{query: "org=acme&period=2026-11&step=day", points: 2, first: 150, total: 1150, totalReq: 13, firstStart: "2026-11-01T00:00:00Z"},
		{query: "org=acme&period=2026-11&step=hour", points: 2, first: 150, total: 1150, firstStart: "2026-11-01T00:00:00Z"},
		{query: "org=acme&period=2026-11&step=month", points: 1, first: 1150, total: 1150},
		{query: "org=acme&period=2026-10", points: 1, first: 1, total: 1},
		{query: "org=acme&from=2026-10-31T23:00:00Z&to=2026-11-01T01:00:00Z&step=hour", points: 2, first: 1, total: 151},
		{query: "org=acme&from=2026-11-01T00:30:00Z&to=2026-11-01T00:40:00Z", points: 1, first: 150, total: 150},
		{query: "org=nobody&period=2026-11", points: 0, total: 0},
		{query: "org=acme&step=week", problemCode: 400},
		{query: "org=acme&from=yesterday", problemCode: 400},
		{query: "org=acme&from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", problemCode: 400},
		{query: "org=acme&from=2020-01-01T00:00:00Z&to=2026-11-01T00:00:00Z", problemCode: 400},
		{query: "org=acme&period=2026-13", problemCode: 400},
		{query: "", problemCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			if tt.problemCode != 0 {
				checkProblem(t, e.call(t, "GET", "/v1/usage?"+tt.query, ""), tt.problemCode)
				return
			}
			var u UsageSeries
			e.must(t, 200, "GET", "/v1/usage?"+tt.query, "").json(t, &u)
			if len(u.Series) != tt.points || u.Totals.EgressBytes != tt.total {
				t.Fatalf("got %d points, total %d; want %d, %d (%+v)", len(u.Series), u.Totals.EgressBytes, tt.points, tt.total, u)
			}
			if tt.points > 0 && u.Series[0].EgressBytes != tt.first {
				t.Fatalf("first point %+v; want egress %d", u.Series[0], tt.first)
			}
			if tt.totalReq != 0 && u.Totals.Requests != tt.totalReq {
				t.Fatalf("requests %d; want %d", u.Totals.Requests, tt.totalReq)
			}
			if tt.firstStart != "" && u.Series[0].Start.Format(time.RFC3339) != tt.firstStart {
				t.Fatalf("first start %v; want %s", u.Series[0].Start, tt.firstStart)
			}
		})
	}
	// CSV by Accept header.
	r := e.callWith(t, "GET", "/v1/usage?org=acme&period=2026-11", "", map[string]string{"Authorization": "Bearer " + testToken, "Accept": "text/csv"})
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if r.status != 200 || err != nil || len(rows) != 3 || rows[0][0] != "start" || rows[1][1] != "150" {
		t.Fatalf("csv: %d %v %q", r.status, err, r.body)
	}
	// Without a token: 401 like every /v1 route.
	checkProblem(t, e.callWith(t, "GET", "/v1/usage?org=acme", "", nil), 401)
}

func TestUsagePeriodPagination(t *testing.T) {
	e := newUsageEnv(t)
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		var p UsagePeriod
		e.must(t, 200, "GET", "/v1/usage?period=2026-11&limit=2&cursor="+cursor, "").json(t, &p)
		for _, o := range p.Orgs {
			seen = append(seen, o.Org)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if strings.Join(seen, ",") != "acme,beta,cyan,dune" {
		t.Fatalf("orgs over pages: %v", seen)
	}
	r := e.callWith(t, "GET", "/v1/usage?period=2026-11&format=csv", "", map[string]string{"Authorization": "Bearer " + testToken})
	if !strings.HasPrefix(string(r.body), "org,egress_bytes,requests,ingress_bytes,storage_byte_seconds\nacme,1150,13,0,0\n") {
		t.Fatalf("csv: %q", r.body)
	}
	checkProblem(t, e.call(t, "GET", "/v1/usage?period=2026-11&limit=0", ""), 400)
	checkProblem(t, e.call(t, "GET", "/v1/usage?period=nov", ""), 400)

	// The CLI prints the same.
	var out, errOut bytes.Buffer
	code := RunCLI([]string{"--addr", e.srv.URL, "--token", testToken, "usage", "period", "2026-11"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "dune") || !strings.Contains(out.String(), "EGRESS_BYTES") {
		t.Fatalf("CLI usage period: %d %s %s", code, out.String(), errOut.String())
	}
	out.Reset()
	code = RunCLI([]string{"--addr", e.srv.URL, "--token", testToken, "usage", "org", "acme", "--period", "2026-11"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "TOTAL") || !strings.Contains(out.String(), "1150") {
		t.Fatalf("CLI usage org: %d %s %s", code, out.String(), errOut.String())
	}
}

func TestUsageWithoutMeter(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	checkProblem(t, e.call(t, "GET", "/v1/usage?org=a", ""), http.StatusServiceUnavailable)
}
