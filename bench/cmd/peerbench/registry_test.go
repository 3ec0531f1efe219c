package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// TestRegistryBatches: the records decode as the server decodes them, come
// in batches of at most per, and each record's references come before it.
func TestRegistryBatches(t *testing.T) {
	spec := siteSpec{Dir: `/tmp/a "quoted" dir`, Upstream: "127.0.0.1:1234"}
	for _, c := range []struct {
		kind string
		src  sites.Source
		want int
	}{
		{sites.SourceDir, sites.Source{Type: sites.SourceDir, Path: spec.Dir}, len(indexHTML)},
		{sites.SourceUpstream, sites.Source{Type: sites.SourceUpstream, URL: "http://127.0.0.1:1234"}, upstreamBodySize},
	} {
		src, want := registrySource(c.kind, spec)
		if want != c.want {
			t.Errorf("%s: answers of %d bytes, want %d", c.kind, want, c.want)
		}
		checkBatches(t, src, c.src)
	}
}

func checkBatches(t *testing.T, srcJSON []byte, wantSrc sites.Source) {
	t.Helper()
	const n, per = 700, 1000
	var sizes []int
	seen := map[string]int{} // "kind id" → record number
	rec := 0
	for body, count := range registryBatches(n, per, srcJSON) {
		lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
		if len(lines) != count {
			t.Fatalf("batch %d: %d lines, count %d", len(sizes), len(lines), count)
		}
		sizes = append(sizes, count)
		for _, line := range lines {
			var r sites.Record
			dec := json.NewDecoder(strings.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil {
				t.Fatalf("record %d %q: %v", rec, line, err)
			}
			switch r.Kind() {
			case "plan":
				if rec != 0 || r.Plan.Name != benchPlan {
					t.Errorf("record %d: plan %+v", rec, r.Plan)
				}
			case "org":
				if r.Org.Plan != benchPlan {
					t.Errorf("record %d: org %+v", rec, r.Org)
				}
				seen["org "+r.Org.ID] = rec
			case "site":
				if _, ok := seen["org "+r.Site.Org]; !ok {
					t.Errorf("record %d: site %s before its org %s", rec, r.Site.ID, r.Site.Org)
				}
				if r.Site.Source != wantSrc {
					t.Errorf("record %d: source %+v", rec, r.Site.Source)
				}
				seen["site "+r.Site.ID] = rec
			case "domain":
				if _, ok := seen["site "+r.Domain.Site]; !ok {
					t.Errorf("record %d: domain %s before its site %s", rec, r.Domain.Name, r.Domain.Site)
				}
				if want := r.Domain.Site + "." + registryDomain; r.Domain.Name != want {
					t.Errorf("record %d: domain %s, want %s", rec, r.Domain.Name, want)
				}
				seen["domain "+r.Domain.Name] = rec
			default:
				t.Fatalf("record %d %q: kind %q", rec, line, r.Kind())
			}
			rec++
		}
	}
	if want := []int{1000, 1000, 101}; !slices.Equal(sizes, want) {
		t.Errorf("batches %v, want %v", sizes, want)
	}
	if len(seen) != 3*n {
		t.Errorf("%d distinct orgs, sites and domains, want %d", len(seen), 3*n)
	}
	for _, key := range []string{"org o-0", "site s-699", "domain " + registryHost(699)} {
		if _, ok := seen[key]; !ok {
			t.Errorf("no %s", key)
		}
	}
}

// TestRegistryBatchesStop: breaking out of the loop stops the generator,
// and each body ends with a newline.
func TestRegistryBatchesStop(t *testing.T) {
	batches := 0
	for body := range registryBatches(1000, 10, []byte(`{"type":"dir","path":"/x"}`)) {
		if !bytes.HasSuffix(body, []byte("\n")) {
			t.Errorf("body does not end with a newline: %q", body)
		}
		batches++
		if batches == 2 {
			break
		}
	}
	if batches != 2 {
		t.Errorf("%d batches", batches)
	}
}

func TestSampleIndices(t *testing.T) {
	for _, c := range []struct{ n, m, first, last, count int }{
		{10, 1000, 0, 9, 10},
		{1000, 1000, 0, 999, 1000},
		{1_000_000, 1000, 0, 999_999, 1000},
		{100_000, 1000, 0, 99_999, 1000},
	} {
		got := sampleIndices(c.n, c.m)
		if len(got) != c.count || got[0] != c.first || got[len(got)-1] != c.last {
			t.Errorf("sampleIndices(%d, %d): %d indices %v…%v", c.n, c.m, len(got), got[0], got[len(got)-1])
		}
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("sampleIndices(%d, %d): not increasing", c.n, c.m)
		}
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes(" 10000, 100000,1000000")
	if err != nil || !slices.Equal(got, []int{10000, 100000, 1000000}) {
		t.Errorf("parseSizes: %v %v", got, err)
	}
	for _, bad := range []string{"", "10,", "0", "-5", "1e6", "ten"} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("parseSizes(%q): no error", bad)
		}
	}
}

// TestWritePercentiles: p50 and p99 of 200 samples, nearest rank.
func TestWritePercentiles(t *testing.T) {
	var lat []float64
	for i := range 200 {
		lat = append(lat, float64(time.Duration(200-i)*time.Millisecond))
	}
	if p50, p99 := time.Duration(percentile(lat, 0.5)), time.Duration(percentile(lat, 0.99)); p50 != 100*time.Millisecond || p99 != 198*time.Millisecond {
		t.Errorf("p50 %s, p99 %s; want 100ms, 198ms", p50, p99)
	}
}

// TestRegistryTargets: a size not run is "not run", an invalid one
// "invalid", and the verdicts follow the figures.
func TestRegistryTargets(t *testing.T) {
	rows := []registryResult{
		{Sites: 100_000, Import: 30 * time.Second, ImportSitesPerSec: 3333, Valid: true},
		{Sites: 1_000_000, Writes: registryWrites, WriteP99: 6 * time.Millisecond, ImportRSS: 1e9, ProbedRSS: 1.2e9, RestartRSS: 1.1e9,
			Startup: 10 * time.Second, Valid: true},
	}
	got := evaluateRegistryTargets([]scenarioResult{{ID: "registry-scale", Registry: rows}})
	want := []string{"met", "missed", "met", "met"}
	for i, tr := range got {
		if tr.Verdict != want[i] {
			t.Errorf("%s: %s (%s), want %s", tr.Target, tr.Verdict, tr.Measured, want[i])
		}
	}
	rows[0].Valid = false
	got = evaluateRegistryTargets([]scenarioResult{{ID: "registry-scale", Registry: rows[:1]}})
	if v := fmt.Sprint(got[0].Verdict, " ", got[1].Verdict); v != "invalid not run" {
		t.Errorf("verdicts %s, want invalid not run", v)
	}
}
