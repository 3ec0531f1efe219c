package admin

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// usageStore is what both usage stores are to these tests.
type usageStore interface {
	meter.Sink
	UsageReader
	SiteUsageReader
}

// usageStores are the stores per-site usage is tested on, each started for
// the test: the bbolt file and a real redis-server.
var usageStores = []struct {
	name string
	open func(t *testing.T) usageStore
}{
	{"bbolt", func(t *testing.T) usageStore { return store.NewBoltUsage(storetest.Open(t)) }},
	{"redis", func(t *testing.T) usageStore {
		redistest.SkipShort(t)
		srv := redistest.Start(t)
		c := srv.NewClient(t)
		return store.NewRedisUsage(c, store.RedisUsageOptions{})
	}},
}

// siteUsageEnv serves the admin API over a registry with org acme (sites
// www and docs; "gone" had usage and was deleted) and org beta (site blog),
// with usage in st: random batches of two nodes over three days across
// the November/December boundary. want holds each site's expected totals
// by org and site.
func siteUsageEnv(t *testing.T, st usageStore) (e *testEnv, want map[string]map[string]meter.Values) {
	t.Helper()
	ctx := context.Background()
	reg, err := sites.New(ctx, storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	mustDo := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(reg.PutPlan(ctx, sites.Plan{Name: "many"}))
	for _, o := range []string{"acme", "beta"} {
		mustDo(reg.CreateOrg(ctx, sites.Org{ID: o, Plan: "many"}))
	}
	for _, s := range []sites.Site{{ID: "www", Org: "acme"}, {ID: "docs", Org: "acme"}, {ID: "gone", Org: "acme"}, {ID: "blog", Org: "beta"}} {
		s.Source = sites.Source{Type: sites.SourceUpstream, URL: "http://127.0.0.1:9"}
		mustDo(reg.CreateSite(ctx, s))
	}
	if err := reg.DeleteSite(ctx, "gone"); err != nil {
		t.Fatal(err)
	}

	want = map[string]map[string]meter.Values{"acme": {}, "beta": {}}
	rnd := rand.New(rand.NewPCG(18, 7))
	start := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	seq := map[string]uint64{}
	for i := range 80 {
		node := []string{"n1", "n2"}[i%2]
		seq[node]++
		b := &meter.Batch{Node: node, Seq: seq[node], Time: start.Add(time.Duration(i) * 47 * time.Minute)}
		for _, d := range []struct{ org, site string }{{"acme", "www"}, {"acme", "docs"}, {"acme", "gone"}, {"beta", "blog"}} {
			if rnd.IntN(3) == 0 {
				continue
			}
			v := meter.Values{EgressBytes: rnd.Int64N(1 << 40), Requests: rnd.Int64N(100), IngressBytes: rnd.Int64N(1000), StorageByteSeconds: rnd.Int64N(1 << 50)}
			b.Deltas = append(b.Deltas, meter.Delta{Org: d.org, Site: d.site, Values: v})
			sum := want[d.org][d.site]
			sum.Add(v)
			want[d.org][d.site] = sum
		}
		if err := st.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Config{Token: testToken}, reg, Options{Metrics: prometheus.NewRegistry(), Usage: st, SiteUsage: st,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &testEnv{srv: srv, reg: reg}, want
}

// usageRangeQuery covers every batch of siteUsageEnv.
const usageRangeQuery = "from=2026-11-29T00:00:00Z&to=2026-12-05T00:00:00Z"

// TestUsagePerSite: on both stores, group_by=site lists each site's totals
// (the deleted one's included) and they sum to the org's total exactly;
// site=ID gives one site's series; both in JSON and CSV, and through the
// CLI.
func TestUsagePerSite(t *testing.T) {
	for _, us := range usageStores {
		t.Run(us.name, func(t *testing.T) {
			e, want := siteUsageEnv(t, us.open(t))
			for _, org := range []string{"acme", "beta"} {
				var bySite UsageSites
				e.must(t, 200, "GET", "/v1/usage?org="+org+"&group_by=site&"+usageRangeQuery, "").json(t, &bySite)
				var total UsageSeries
				e.must(t, 200, "GET", "/v1/usage?org="+org+"&step=hour&"+usageRangeQuery, "").json(t, &total)
				var sum, wantSum meter.Values
				for _, st := range bySite.Sites {
					sum.Add(st.Values)
					if st.Values != want[org][st.Site] {
						t.Errorf("%s/%s: %+v, want %+v", org, st.Site, st.Values, want[org][st.Site])
					}
				}
				for _, v := range want[org] {
					wantSum.Add(v)
				}
				if len(bySite.Sites) != len(want[org]) || sum != total.Totals || bySite.Totals != total.Totals || sum != wantSum {
					t.Fatalf("%s: %d sites summing to %+v (totals %+v); the org's total is %+v, want %d sites, %+v",
						org, len(bySite.Sites), sum, bySite.Totals, total.Totals, len(want[org]), wantSum)
				}
				for _, st := range bySite.Sites {
					var one UsageSeries
					e.must(t, 200, "GET", "/v1/usage?org="+org+"&site="+st.Site+"&step=hour&"+usageRangeQuery, "").json(t, &one)
					if one.Site != st.Site || one.Totals != st.Values || len(one.Series) == 0 {
						t.Errorf("site=%s: %s with %d points, totals %+v; want %+v", st.Site, one.Site, len(one.Series), one.Totals, st.Values)
					}
				}
			}
			// A month: the sites of that month only, summing to its total.
			var nov UsageSites
			e.must(t, 200, "GET", "/v1/usage?org=acme&group_by=site&period=2026-11", "").json(t, &nov)
			var novTotal UsageSeries
			e.must(t, 200, "GET", "/v1/usage?org=acme&period=2026-11", "").json(t, &novTotal)
			if nov.Totals != novTotal.Totals || nov.Totals.Requests == 0 {
				t.Errorf("November: sites sum to %+v, the org's total is %+v", nov.Totals, novTotal.Totals)
			}
			checkSiteUsageCSV(t, e, want["acme"])
			checkSiteUsageCLI(t, e, want["acme"])
		})
	}
}

func checkSiteUsageCSV(t *testing.T, e *testEnv, want map[string]meter.Values) {
	t.Helper()
	h := map[string]string{"Authorization": "Bearer " + testToken, "Accept": "text/csv"}
	r := e.callWith(t, "GET", "/v1/usage?org=acme&group_by=site&"+usageRangeQuery, "", h)
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if r.status != 200 || err != nil || len(rows) != 4 || strings.Join(rows[0], ",") != "site,egress_bytes,requests,ingress_bytes,storage_byte_seconds" {
		t.Fatalf("group_by=site CSV: %d %v %q", r.status, err, r.body)
	}
	for _, row := range rows[1:] {
		if row[1] != strconv.FormatInt(want[row[0]].EgressBytes, 10) {
			t.Errorf("CSV row %v: egress %d expected", row, want[row[0]].EgressBytes)
		}
	}
	r = e.callWith(t, "GET", "/v1/usage?org=acme&site=gone&step=month&"+usageRangeQuery, "", h)
	rows, err = csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if r.status != 200 || err != nil || len(rows) != 3 || rows[0][0] != "start" {
		t.Fatalf("site=gone CSV by month: %d %v %q", r.status, err, r.body)
	}
}

func checkSiteUsageCLI(t *testing.T, e *testEnv, want map[string]meter.Values) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := RunCLI([]string{"--addr", e.srv.URL, "--token", testToken, "usage", "org", "acme", "--by-site",
		"--from", "2026-11-29T00:00:00Z", "--to", "2026-12-05T00:00:00Z"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "SITE") || !strings.Contains(out.String(), strconv.FormatInt(want["docs"].EgressBytes, 10)) {
		t.Fatalf("CLI usage org --by-site: %d %s %s", code, out.String(), errOut.String())
	}
	out.Reset()
	code = RunCLI([]string{"--addr", e.srv.URL, "--token", testToken, "usage", "org", "acme", "--site", "www", "--step", "month",
		"--from", "2026-11-29T00:00:00Z", "--to", "2026-12-05T00:00:00Z"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "TOTAL") || !strings.Contains(out.String(), strconv.FormatInt(want["www"].EgressBytes, 10)) {
		t.Fatalf("CLI usage org --site: %d %s %s", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := RunCLI([]string{"--addr", e.srv.URL, "--token", testToken, "usage", "org", "acme", "--by-site", "--site", "www"}, &out, &errOut); code != 2 {
		t.Fatalf("CLI --by-site with --site: exit %d, want 2", code)
	}
}

// TestUsagePerSiteRefusals: each bad per-site query gets its status and
// code.
func TestUsagePerSiteRefusals(t *testing.T) {
	e, _ := siteUsageEnv(t, store.NewBoltUsage(storetest.Open(t)))
	tests := []struct {
		query  string
		status int
		code   reason.Code
	}{
		{"org=acme&site=blog", http.StatusUnprocessableEntity, reason.SiteNotInOrg},
		{"org=acme&site=nosuch", http.StatusNotFound, reason.NotFound},
		{"org=acme&group_by=org", http.StatusBadRequest, reason.BadRequest},
		{"org=acme&group_by=site&site=www", http.StatusBadRequest, reason.BadRequest},
		{"org=acme&group_by=site&step=day", http.StatusBadRequest, reason.BadRequest},
		{"period=2026-11&site=www", http.StatusBadRequest, reason.BadRequest},
		{"period=2026-11&group_by=site", http.StatusBadRequest, reason.BadRequest},
		{"org=acme&site=www&step=week", http.StatusBadRequest, reason.BadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			p := checkProblem(t, e.call(t, "GET", "/v1/usage?"+tt.query, ""), tt.status)
			if p.Code != tt.code {
				t.Fatalf("code %s, want %s (%+v)", p.Code, tt.code, p)
			}
		})
	}
	// A site of acme without usage in the range: an empty series.
	var u UsageSeries
	e.must(t, 200, "GET", "/v1/usage?org=acme&site=www&period=2020-01", "").json(t, &u)
	if len(u.Series) != 0 || u.Site != "www" {
		t.Fatalf("no usage: %+v", u)
	}
}
