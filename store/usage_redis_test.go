package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/meter"
)

// redisCounter counts what a client sends: pipelines, the commands in them,
// and single commands. The handshake of a new connection (HELLO, CLIENT
// SETINFO) is not counted.
type redisCounter struct {
	pipelines, pipelined, single atomic.Int64
}

func isHandshake(cmd redis.Cmder) bool { return cmd.Name() == "hello" || cmd.Name() == "client" }

func (h *redisCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *redisCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isHandshake(cmd) {
			h.single.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *redisCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !isHandshake(cmds[0]) {
			h.pipelines.Add(1)
			h.pipelined.Add(int64(len(cmds)))
		}
		return next(ctx, cmds)
	}
}

func (h *redisCounter) reset() {
	h.pipelines.Store(0)
	h.pipelined.Store(0)
	h.single.Store(0)
}

// startRedisSink starts a redis-server for the test and returns a sink on it,
// the client (with a counter hook) and the server.
func startRedisSink(t testing.TB, opts RedisUsageOptions) (*RedisUsage, *redis.Client, *redisCounter, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: time.Second, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	hook := new(redisCounter)
	c.AddHook(hook)
	return NewRedisUsage(c, opts), c, hook, srv
}

func openBoltSink(t testing.TB) *BoltUsage {
	t.Helper()
	st, err := Open(Config{Path: filepath.Join(t.TempDir(), "tollgate.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return NewBoltUsage(st)
}

func mustApply(t testing.TB, s meter.Sink, bs ...*meter.Batch) {
	t.Helper()
	for _, b := range bs {
		if err := s.Apply(context.Background(), b); err != nil {
			t.Fatalf("Apply(seq %d): %v", b.Seq, err)
		}
	}
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// allPeriodTotals pages through a period with limit and returns every page.
func allPeriodTotals(t *testing.T, r meter.Reader, period string, limit int) [][]meter.OrgTotal {
	t.Helper()
	var pages [][]meter.OrgTotal
	after := ""
	for range 100 {
		page, next, err := r.PeriodTotals(context.Background(), period, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, page)
		if next == "" {
			return pages
		}
		after = next
	}
	t.Fatal("PeriodTotals never returned an empty cursor")
	return nil
}

// Two hours on both sides of a period boundary.
var (
	novLastHour  = utc("2026-11-30T23:10:00Z")
	decFirstHour = utc("2026-12-01T00:20:00Z")
)

func TestRedisApplyAndRead(t *testing.T) {
	r, _, _, _ := startRedisSink(t, RedisUsageOptions{})
	testApplyAndRead(t, r)
	t.Run("bad arguments", func(t *testing.T) {
		if _, err := r.Hourly(context.Background(), "acme", utc("2026-01-01T00:00:00Z"), utc("2027-02-05T01:00:00Z")); err == nil {
			t.Error("Hourly over 400 days: no error")
		}
		if _, _, err := r.PeriodTotals(context.Background(), "2026-11", "", 0); err == nil {
			t.Error("PeriodTotals with limit 0: no error")
		}
	})
}

// testApplyAndRead applies batches of two nodes over two hours across a
// period boundary to r and checks what its queries answer.
func testApplyAndRead(t *testing.T, r interface {
	meter.Sink
	meter.Reader
}) {
	mustApply(t, r,
		&meter.Batch{Node: "n1", Seq: 1, Time: novLastHour, Deltas: []meter.Delta{
			{Org: "acme", Site: "www", Values: meter.Values{EgressBytes: 100, Requests: 2, IngressBytes: 10, StorageByteSeconds: 1000}},
			{Org: "acme", Site: "docs", Values: meter.Values{EgressBytes: 50, Requests: 1}},
			{Org: "beta", Site: "site", Values: meter.Values{EgressBytes: 7, Requests: 1}},
		}},
		&meter.Batch{Node: "n1", Seq: 2, Time: novLastHour.Add(30 * time.Minute), Deltas: []meter.Delta{
			{Org: "acme", Site: "www", Values: meter.Values{EgressBytes: 1, Requests: 1}},
		}},
		&meter.Batch{Node: "n1", Seq: 3, Time: decFirstHour, Deltas: []meter.Delta{
			{Org: "acme", Site: "www", Values: meter.Values{EgressBytes: 200, Requests: 4}},
			{Org: "gamma", Site: "x", Values: meter.Values{Requests: 1}},
		}},
		&meter.Batch{Node: "n2", Seq: 1, Time: decFirstHour, Deltas: []meter.Delta{
			{Org: "acme", Site: "docs", Values: meter.Values{EgressBytes: 5, Requests: 1, IngressBytes: 3, StorageByteSeconds: 9}},
		}},
	)
	novAcme := meter.Point{Start: utc("2026-11-30T23:00:00Z"), Values: meter.Values{EgressBytes: 151, Requests: 4, IngressBytes: 10, StorageByteSeconds: 1000}}
	decAcme := meter.Point{Start: utc("2026-12-01T00:00:00Z"), Values: meter.Values{EgressBytes: 205, Requests: 5, IngressBytes: 3, StorageByteSeconds: 9}}

	hourly := []struct {
		name     string
		org      string
		from, to string
		want     []meter.Point
	}{
		{"both hours", "acme", "2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z", []meter.Point{novAcme, decAcme}},
		{"to on an hour boundary is excluded", "acme", "2026-11-30T23:59:00Z", "2026-12-01T00:00:00Z", []meter.Point{novAcme}},
		{"the hour holding to is included", "acme", "2026-11-30T23:59:00Z", "2026-12-01T00:00:01Z", []meter.Point{novAcme, decAcme}},
		{"one org only", "beta", "2026-11-01T00:00:00Z", "2026-12-31T00:00:00Z", []meter.Point{{Start: novAcme.Start, Values: meter.Values{EgressBytes: 7, Requests: 1}}}},
		{"no usage", "nobody", "2026-11-01T00:00:00Z", "2026-12-31T00:00:00Z", nil},
		{"empty range", "acme", "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z", nil},
		{"400 days not on hours", "acme", "2026-01-01T10:30:00Z", "2027-02-05T10:30:00Z", []meter.Point{novAcme, decAcme}},
	}
	for _, tc := range hourly {
		t.Run("hourly/"+tc.name, func(t *testing.T) {
			got, err := r.Hourly(context.Background(), tc.org, utc(tc.from), utc(tc.to))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Hourly = %+v, want %+v", got, tc.want)
			}
		})
	}

	periods := []struct {
		period string
		want   []meter.OrgTotal
	}{
		{"2026-11", []meter.OrgTotal{{Org: "acme", Values: novAcme.Values}, {Org: "beta", Values: meter.Values{EgressBytes: 7, Requests: 1}}}},
		{"2026-12", []meter.OrgTotal{{Org: "acme", Values: decAcme.Values}, {Org: "gamma", Values: meter.Values{Requests: 1}}}},
		{"2027-01", nil},
	}
	for _, tc := range periods {
		t.Run("period/"+tc.period, func(t *testing.T) {
			got, next, err := r.PeriodTotals(context.Background(), tc.period, "", 10)
			if err != nil || next != "" {
				t.Fatalf("PeriodTotals: next %q, err %v", next, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("PeriodTotals = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRedisApplyIsIdempotent(t *testing.T) {
	r, _, _, _ := startRedisSink(t, RedisUsageOptions{})
	type step struct {
		node string
		seq  uint64
	}
	tests := []struct {
		name  string
		steps []step
		want  int64 // requests counted, one per applied step
	}{
		{"same batch twice", []step{{"n1", 5}, {"n1", 5}}, 1},
		{"older after newer is skipped", []step{{"n1", 6}, {"n1", 5}}, 1},
		{"newer after older", []step{{"n1", 5}, {"n1", 6}}, 2},
		{"same seq from another node", []step{{"n1", 5}, {"n2", 5}}, 2},
		{"more digits is newer", []step{{"n1", 999}, {"n1", 1000}, {"n1", 999}}, 2},
		// Beyond 2^53 doubles cannot tell these apart.
		{"1.8e18 apart by one", []step{{"n1", 1795000000000000000}, {"n1", 1795000000000000001}, {"n1", 1795000000000000000}}, 2},
		{"1.8e18 older by one", []step{{"n1", 1795000000000000001}, {"n1", 1795000000000000000}}, 1},
		{"max uint64", []step{{"n1", 1<<64 - 2}, {"n1", 1<<64 - 1}, {"n1", 1<<64 - 1}}, 2},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			org := fmt.Sprintf("org%d", i)
			for _, s := range tc.steps {
				mustApply(t, r, &meter.Batch{Node: s.node, Seq: s.seq, Time: novLastHour, Deltas: []meter.Delta{
					{Org: org, Site: "a", Values: meter.Values{Requests: 1}},
				}})
			}
			pts, err := r.Hourly(context.Background(), org, novLastHour, novLastHour.Add(time.Hour))
			if err != nil || len(pts) != 1 {
				t.Fatalf("Hourly = %v, %v", pts, err)
			}
			if pts[0].Requests != tc.want {
				t.Fatalf("requests = %d, want %d", pts[0].Requests, tc.want)
			}
		})
	}
}

func TestRedisMatchesBolt(t *testing.T) {
	r, _, _, _ := startRedisSink(t, RedisUsageOptions{})
	bl := openBoltSink(t)
	orgs := []string{"o-1", "o-2", "o-3", "o-4", "o-5"}
	sites := []string{"a", "b"}
	start := utc("2026-11-30T20:00:00Z")

	// Flushes of two nodes over 8 hours across a period boundary, with
	// replays of sent batches and stale Seqs carrying other deltas.
	rnd := rand.New(rand.NewPCG(1, 2))
	seqs := map[string]uint64{"n1": 1795000000000000000, "n2": 1795000000000000000}
	var sent, batches []*meter.Batch
	for i := range 60 {
		node := []string{"n1", "n2"}[i%2]
		switch rnd.IntN(5) {
		case 0:
			if len(sent) > 0 {
				batches = append(batches, sent[rnd.IntN(len(sent))]) // resent
				continue
			}
		case 1:
			seqs[node] += 0 // same Seq again with other deltas: must be skipped where applied
		default:
			seqs[node]++
		}
		b := &meter.Batch{Node: node, Seq: seqs[node], Time: start.Add(time.Duration(i) * 8 * time.Minute)}
		for _, org := range orgs {
			for _, site := range sites {
				if rnd.IntN(3) == 0 {
					continue
				}
				b.Deltas = append(b.Deltas, meter.Delta{Org: org, Site: site, Values: meter.Values{
					EgressBytes: rnd.Int64N(1 << 40), Requests: rnd.Int64N(100), IngressBytes: rnd.Int64N(1000), StorageByteSeconds: rnd.Int64N(1 << 50),
				}})
			}
		}
		sent = append(sent, b)
		batches = append(batches, b)
	}
	mustApply(t, r, batches...)
	mustApply(t, bl, batches...)

	for _, org := range append(orgs, "none") {
		from, to := start.Add(-time.Hour), start.Add(10*time.Hour)
		want, err := bl.Hourly(context.Background(), org, from, to)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Hourly(context.Background(), org, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Hourly(%s):\nredis %+v\nbolt  %+v", org, got, want)
		}
		checkSiteUsage(t, org, from, to, r, bl, want)
	}
	for _, period := range []string{"2026-11", "2026-12", "2027-01"} {
		for _, limit := range []int{1, 2, 5, 10} {
			got, want := allPeriodTotals(t, r, period, limit), allPeriodTotals(t, bl, period, limit)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("PeriodTotals(%s, limit %d):\nredis %+v\nbolt  %+v", period, limit, got, want)
			}
		}
	}
	if pages := allPeriodTotals(t, r, "2026-12", 2); len(pages) != 3 || len(pages[0]) != 2 || len(pages[2]) != 1 {
		t.Errorf("5 orgs by 2: pages %+v", pages)
	}
}

// siteReader is the per-site side of both usage stores.
type siteReader interface {
	SiteHourly(ctx context.Context, org, site string, from, to time.Time) ([]meter.Point, error)
	SiteTotals(ctx context.Context, org string, from, to time.Time) ([]meter.SiteTotal, error)
}

// checkSiteUsage: both stores answer the same per-site usage of org over
// [from, to) and over its first hours, whose totals, and those of each
// site's hourly series, sum to the org's hourly points exactly.
func checkSiteUsage(t *testing.T, org string, from, to time.Time, r, bl siteReader, orgHourly []meter.Point) {
	t.Helper()
	ctx := context.Background()
	for _, end := range []time.Time{to, from.Add(4*time.Hour + 30*time.Minute)} {
		var orgTotal meter.Values
		for _, p := range orgHourly {
			if p.Start.Before(end) {
				orgTotal.Add(p.Values)
			}
		}
		want, err := bl.SiteTotals(ctx, org, from, end)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.SiteTotals(ctx, org, from, end)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("SiteTotals(%s, to %s):\nredis %+v\nbolt  %+v", org, end, got, want)
		}
		var sum, seriesSum meter.Values
		for _, st := range got {
			sum.Add(st.Values)
			pts, err := r.SiteHourly(ctx, org, st.Site, from, end)
			if err != nil {
				t.Fatal(err)
			}
			bpts, err := bl.SiteHourly(ctx, org, st.Site, from, end)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pts, bpts) {
				t.Errorf("SiteHourly(%s, %s):\nredis %+v\nbolt  %+v", org, st.Site, pts, bpts)
			}
			for _, p := range pts {
				seriesSum.Add(p.Values)
			}
		}
		if sum != orgTotal || seriesSum != orgTotal {
			t.Errorf("%s to %s: sites sum to %+v, their series to %+v; the org's total is %+v", org, end, sum, seriesSum, orgTotal)
		}
	}
}

func TestRedisKeySchemaAndTTL(t *testing.T) {
	const retention = 48 * time.Hour
	r, c, _, _ := startRedisSink(t, RedisUsageOptions{Retention: retention})
	ctx := context.Background()
	mustApply(t, r, &meter.Batch{Node: "node-1", Seq: 1795000000000000001, Time: novLastHour, Deltas: []meter.Delta{
		{Org: "acme", Site: "www", Values: meter.Values{EgressBytes: 100, Requests: 2, IngressBytes: 10, StorageByteSeconds: 1000}},
		{Org: "acme", Site: "docs", Values: meter.Values{Requests: 1}},
		{Org: "beta", Site: "site", Values: meter.Values{}},
	}})
	usage := func(e, r, i, s string) map[string]string {
		m := map[string]string{"egress_bytes": e, "requests": r, "ingress_bytes": i, "storage_byte_seconds": s}
		for k, v := range m {
			if v == "" {
				delete(m, k)
			}
		}
		return m
	}
	want := []struct {
		key    string
		ttl    time.Duration
		fields map[string]string // for hashes
		zset   []string          // for sorted sets (the period index)
		set    []string          // for sets (a period's sites)
	}{
		{"tg:usage:{acme}:h:2026113023", retention, usage("100", "3", "10", "1000"), nil, nil},
		{"tg:usage:{acme}:s:www:h:2026113023", retention, usage("100", "2", "10", "1000"), nil, nil},
		{"tg:usage:{acme}:s:docs:h:2026113023", retention, usage("", "1", "", ""), nil, nil},
		{"tg:usage:{acme}:p:2026-11", 2 * retention, usage("100", "3", "10", "1000"), nil, nil},
		{"tg:usage:{acme}:p:2026-11:sites", 2 * retention, nil, nil, []string{"docs", "www"}},
		{"tg:usage:{acme}:applied", 2 * retention, map[string]string{"node-1": "01795000000000000001"}, nil, nil},
		{"tg:usage:{beta}:h:2026113023", retention, usage("", "0", "", ""), nil, nil},
		{"tg:usage:{beta}:s:site:h:2026113023", retention, usage("", "0", "", ""), nil, nil},
		{"tg:usage:{beta}:p:2026-11", 2 * retention, usage("", "0", "", ""), nil, nil},
		{"tg:usage:{beta}:p:2026-11:sites", 2 * retention, nil, nil, []string{"site"}},
		{"tg:usage:{beta}:applied", 2 * retention, map[string]string{"node-1": "01795000000000000001"}, nil, nil},
		{"tg:usage:period:2026-11:orgs", 2 * retention, nil, []string{"acme", "beta"}, nil},
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var wantKeys []string
	for _, w := range want {
		wantKeys = append(wantKeys, w.key)
	}
	slices.Sort(keys)
	slices.Sort(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("keys:\n%s\nwant:\n%s", strings.Join(keys, "\n"), strings.Join(wantKeys, "\n"))
	}
	for _, w := range want {
		t.Run(w.key, func(t *testing.T) {
			ttl, err := c.TTL(ctx, w.key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl <= w.ttl-time.Minute || ttl > w.ttl {
				t.Errorf("TTL = %s, want %s", ttl, w.ttl)
			}
			if w.set != nil {
				got, err := c.SMembers(ctx, w.key).Result()
				if err != nil {
					t.Fatal(err)
				}
				slices.Sort(got)
				if !slices.Equal(got, w.set) {
					t.Errorf("set = %v, want %v", got, w.set)
				}
				return
			}
			if w.zset != nil {
				got, err := c.ZRangeWithScores(ctx, w.key, 0, -1).Result()
				if err != nil {
					t.Fatal(err)
				}
				want := []redis.Z{}
				for _, m := range w.zset {
					want = append(want, redis.Z{Member: m})
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("zset = %+v, want %+v", got, want)
				}
				return
			}
			got, err := c.HGetAll(ctx, w.key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, w.fields) {
				t.Errorf("hash = %v, want %v", got, w.fields)
			}
		})
	}
}

func TestRedisDownThenBack(t *testing.T) {
	r, _, _, srv := startRedisSink(t, RedisUsageOptions{})
	ctx := context.Background()
	batch := func(seq uint64) *meter.Batch {
		return &meter.Batch{Node: "n1", Seq: seq, Time: novLastHour, Deltas: []meter.Delta{{Org: "acme", Site: "www", Values: meter.Values{Requests: 1}}}}
	}
	mustApply(t, r, batch(1))
	srv.Stop()
	if err := r.Apply(ctx, batch(2)); err == nil {
		t.Fatal("Apply with Redis down: no error")
	}
	if _, err := r.Hourly(ctx, "acme", novLastHour, novLastHour.Add(time.Hour)); err == nil {
		t.Fatal("Hourly with Redis down: no error")
	}
	srv.Restart() // the data survives (append-only file); the script cache does not
	mustApply(t, r, batch(2))
	mustApply(t, r, batch(2)) // a resend after recovery counts once
	pts, err := r.Hourly(ctx, "acme", novLastHour, novLastHour.Add(time.Hour))
	if err != nil || len(pts) != 1 || pts[0].Requests != 2 {
		t.Fatalf("after restart: Hourly = %+v, %v", pts, err)
	}
}

func TestRedisApplyIsOneRoundTrip(t *testing.T) {
	r, _, hook, _ := startRedisSink(t, RedisUsageOptions{})
	mk := func(seq uint64, orgs int) *meter.Batch {
		b := &meter.Batch{Node: "n1", Seq: seq, Time: novLastHour}
		for i := range orgs {
			b.Deltas = append(b.Deltas,
				meter.Delta{Org: fmt.Sprintf("org-%d", i), Site: "a", Values: meter.Values{Requests: 1}},
				meter.Delta{Org: fmt.Sprintf("org-%d", i), Site: "b", Values: meter.Values{EgressBytes: 1}})
		}
		return b
	}
	// The first flush finds the script cache empty: it loads the script and
	// sends the orgs again.
	mustApply(t, r, mk(1, 50))
	if p, s := hook.pipelines.Load(), hook.single.Load(); p != 2 || s != 1 {
		t.Errorf("first flush: %d pipelines and %d single commands, want 2 and 1 (SCRIPT LOAD)", p, s)
	}
	for _, orgs := range []int{1, 50, 2500} {
		hook.reset()
		mustApply(t, r, mk(uint64(orgs)+1, orgs))
		wantCmds := int64(orgs + (orgs+indexChunk-1)/indexChunk + 1) // EVALSHA per org, ZADD per chunk, EXPIRE
		if p, n, s := hook.pipelines.Load(), hook.pipelined.Load(), hook.single.Load(); p != 1 || n != wantCmds || s != 0 {
			t.Errorf("%d orgs: %d pipelines of %d commands and %d single commands, want 1 of %d and 0", orgs, p, n, s, wantCmds)
		}
	}
}

// BenchmarkRedisApply100kOrgs flushes one batch of 100,000 orgs (one site
// each) to a real Redis.
func BenchmarkRedisApply100kOrgs(b *testing.B) {
	const orgs = 100_000
	r, _, hook, _ := startRedisSink(b, RedisUsageOptions{})
	batch := &meter.Batch{Node: "n1", Seq: 1, Time: novLastHour, Deltas: make([]meter.Delta, 0, orgs)}
	for i := range orgs {
		batch.Deltas = append(batch.Deltas, meter.Delta{Org: fmt.Sprintf("org-%06d", i), Site: "www",
			Values: meter.Values{EgressBytes: 4096, Requests: 1, IngressBytes: 100}})
	}
	mustApply(b, r, batch) // loads the script
	hook.reset()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		batch.Seq++
		if err := r.Apply(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(hook.pipelined.Load()+hook.single.Load())/float64(b.N), "cmds/flush")
	b.ReportMetric(float64(hook.pipelines.Load())/float64(b.N), "roundtrips/flush")
	b.ReportMetric(float64(orgs)*float64(b.N)/b.Elapsed().Seconds(), "orgs/s")
}
