package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"one", []float64{7}, 7},
		{"odd, unsorted", []float64{3, 1, 2}, 2},
		{"even: mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"outlier does not move it", []float64{100, 101, 99, 5}, 99.5},
		{"repeats", []float64{2, 2, 9}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			if got := median(in); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("median reordered its argument: %v", in)
			}
		})
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}

func TestPairedRatios(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name   string
		a, b   []float64
		want   []float64
		median float64
	}{
		{"round by round", []float64{100, 90, 80}, []float64{50, 90, 160}, []float64{2, 1, 0.5}, 1},
		// Drift that hits both sides of a round cancels: the ratio is 0.5 in
		// every round although the absolute figures halve.
		{"drift cancels", []float64{50, 25, 12.5}, []float64{100, 50, 25}, []float64{0.5, 0.5, 0.5}, 0.5},
		{"failed rounds are skipped", []float64{100, nan, 60}, []float64{50, 40, nan}, []float64{2}, 2},
		{"zero peer is skipped", []float64{10, 10}, []float64{0, 20}, []float64{0.5}, 0.5},
		{"unequal lengths use the common rounds", []float64{10, 20, 30}, []float64{5, 10}, []float64{2, 2}, 2},
		{"even count", []float64{1, 3}, []float64{1, 1}, []float64{1, 3}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pairedRatios(tt.a, tt.b); !slices.Equal(got, tt.want) {
				t.Errorf("pairedRatios = %v, want %v", got, tt.want)
			}
			if got := medianRatio(tt.a, tt.b); got != tt.median {
				t.Errorf("medianRatio = %v, want %v", got, tt.median)
			}
		})
	}
	if got := medianRatio([]float64{nan}, []float64{1}); !math.IsNaN(got) {
		t.Errorf("medianRatio with no usable round = %v, want NaN", got)
	}
}

// The median of per-round ratios differs from the ratio of medians: it pairs
// each round's figures, which were measured back to back.
func TestSummarize(t *testing.T) {
	run := func(rps float64, p99 time.Duration) runResult {
		return runResult{Requests: 1, ReqPerSec: rps, P99: p99}
	}
	base := []float64{100, 60, 90}
	peer := serverResult{Server: srvNginx, Runs: []runResult{run(50, 3*time.Millisecond), run(60, time.Millisecond), run(100, 2*time.Millisecond)}}
	summarize(&peer, base, []float64{50, 60, 100}, false)
	if peer.ReqPerSec != 60 || peer.P99 != 2*time.Millisecond {
		t.Errorf("medians = %v req/s, p99 %v; want 60, 2ms", peer.ReqPerSec, peer.P99)
	}
	if peer.BaseRatio == nil || *peer.BaseRatio != 1 { // ratios 2, 1, 0.9
		t.Errorf("BaseRatio = %v, want 1", fmtRatio(peer.BaseRatio))
	}
	if want := []float64{2, 1, 0.9}; !slices.Equal(peer.BaseRatios, want) {
		t.Errorf("BaseRatios = %v, want %v", peer.BaseRatios, want)
	}
	if got := fmtSpread(peer.BaseRatios); got != " (0.90–2.00)" {
		t.Errorf("fmtSpread = %q", got)
	}
	if !peer.Valid {
		t.Error("a row with runs and no problems is not valid")
	}

	bad := serverResult{Server: srvCaddy, Problems: []string{"round 1: 3 socket errors"}, Runs: []runResult{run(10, time.Millisecond)}}
	summarize(&bad, base, []float64{10, math.NaN(), math.NaN()}, false)
	if bad.Valid {
		t.Error("a row with problems is valid")
	}
	if bad.BaseRatio == nil || *bad.BaseRatio != 10 {
		t.Errorf("BaseRatio = %v, want 10 (shown even when invalid)", fmtRatio(bad.BaseRatio))
	}

	self := serverResult{Server: srvTollgate, Runs: []runResult{run(100, time.Millisecond)}}
	summarize(&self, base, base, true)
	if self.BaseRatio != nil {
		t.Errorf("the base has a ratio to itself: %v", *self.BaseRatio)
	}
}

func TestEvaluateTargets(t *testing.T) {
	r := func(v float64) *float64 { return &v }
	results := []scenarioResult{
		{ID: "static-4k", Status: statusMeasured, Servers: []serverResult{
			{Server: srvTollgate, Valid: true},
			{Server: srvNginx, Valid: true, BaseRatio: r(1.05)},
			{Server: srvCaddy, Valid: true, BaseRatio: r(3.5)},
		}},
		{ID: "proxy", Status: statusMeasured, Servers: []serverResult{
			{Server: srvTollgate, Valid: false},
			{Server: srvNginx, Valid: true, BaseRatio: r(1.2)},
		}},
		{ID: "https-h1", Status: statusNotBuilt},
	}
	want := map[string]string{
		"static 4 KiB h1 ≥ 1.0× nginx":           "met",
		"static 4 KiB h1 ≥ 4× Caddy":             "missed",
		"reverse proxy ≥ 1.0× nginx":             "invalid",
		"HTTPS h1 keep-alive ≥ 0.9× nginx":       statusNotBuilt,
		"HTTPS h2 ≥ 2× Caddy":                    "not run",
		"metering costs < 3 % (on ÷ off ≥ 0.97)": "not run",
	}
	for _, rt := range registryTargets { // registry-scale did not run
		want[rt.Text] = "not run"
	}
	for _, ct := range clusterTargets { // nor registry-cluster
		want[ct.Text] = "not run"
	}
	for _, tr := range evaluateTargets(results) {
		if tr.Verdict != want[tr.Target] {
			t.Errorf("%s: verdict %q, want %q", tr.Target, tr.Verdict, want[tr.Target])
		}
	}
}

func TestGroupThousands(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 63512: "63,512", 1234567: "1,234,567"} {
		if got := groupThousands(in); got != want {
			t.Errorf("groupThousands(%d) = %q, want %q", in, got, want)
		}
	}
}

// A target over a run where a server left its core partly idle says so and
// gives the per-CPU-second ratio beside the req/s one.
func TestEvaluateTargetsLoadBound(t *testing.T) {
	ratio := 1.25
	sc := scenarioResult{ID: "https-h1", Servers: []serverResult{
		{Server: srvTollgateTLS, Valid: true, ServerBusy: 0.68, CPUPerRequest: 25 * time.Microsecond},
		{Server: srvNginx, Valid: true, ServerBusy: 0.54, CPUPerRequest: 20 * time.Microsecond, BaseRatio: &ratio},
	}}
	var got targetResult
	for _, tr := range evaluateTargets([]scenarioResult{sc}) {
		if strings.HasPrefix(tr.Target, "HTTPS h1") {
			got = tr
		}
	}
	if got.Verdict != "met" || !got.LoadBound || got.CPURatio == nil || *got.CPURatio != 0.8 {
		t.Fatalf("target = %+v, want met, load bound, CPU ratio 0.8", got)
	}
	if want := "1.25× (load-generator bound; per server CPU second 0.80×)"; got.fmtMeasured() != want {
		t.Errorf("fmtMeasured() = %q, want %q", got.fmtMeasured(), want)
	}

	sc.Servers[0].ServerBusy, sc.Servers[1].ServerBusy = 0.97, 0.95
	for _, tr := range evaluateTargets([]scenarioResult{sc}) {
		if strings.HasPrefix(tr.Target, "HTTPS h1") && (tr.LoadBound || tr.fmtMeasured() != "1.25×") {
			t.Errorf("saturated servers: %+v, %q", tr, tr.fmtMeasured())
		}
	}
}
