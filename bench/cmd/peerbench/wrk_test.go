package main

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The files under testdata/wrk are real wrk 4.1.0 reports (Debian 12).
func TestParseWrkSamples(t *testing.T) {
	tests := []struct {
		file string
		want runResult
		// problems is how many reasons to distrust the run problems() gives.
		problems int
	}{
		{"static-4k-ms.txt", runResult{Requests: 31079, Elapsed: 2 * time.Second, ReqPerSec: 15528.15,
			ThreadReqPerSec: 16040, LatencyAvg: 8630 * time.Microsecond, P50: 3300 * time.Microsecond,
			P99: 64020 * time.Microsecond, BytesRead: 128.55 * (1 << 20)}, 0},
		{"static-4k-us.txt", runResult{Requests: 20683, Elapsed: 2010 * time.Millisecond, ReqPerSec: 10281.44,
			ThreadReqPerSec: 10620, LatencyAvg: 4460 * time.Microsecond, P50: 187 * time.Microsecond,
			P99: 65140 * time.Microsecond, BytesRead: 85.55 * (1 << 20)}, 0},
		{"static-1m-hundreds.txt", runResult{Requests: 1116, Elapsed: 2110 * time.Millisecond, ReqPerSec: 527.85,
			ThreadReqPerSec: 531.17, LatencyAvg: 76270 * time.Microsecond, P50: 68800 * time.Microsecond,
			P99: 203230 * time.Microsecond, BytesRead: 1.09 * (1 << 30)}, 0},
		{"slow-seconds.txt", runResult{Requests: 8, Elapsed: 3010 * time.Millisecond, ReqPerSec: 2.66,
			ThreadReqPerSec: 4.67, LatencyAvg: 1200 * time.Millisecond, P50: 1200 * time.Millisecond,
			P99: 1200 * time.Millisecond, BytesRead: 0.92 * 1024}, 0},
		{"non2xx.txt", runResult{Requests: 16245, Elapsed: 2060 * time.Millisecond, ReqPerSec: 7904.91,
			ThreadReqPerSec: 8300, LatencyAvg: 7790 * time.Microsecond, P50: 3640 * time.Microsecond,
			P99: 120940 * time.Microsecond, BytesRead: 5.25 * (1 << 20), Non2xx3xx: 16245}, 1},
		{"timeouts.txt", runResult{Requests: 4, Elapsed: 2010 * time.Millisecond, ReqPerSec: 1.99,
			ThreadReqPerSec: 3, BytesRead: 472, SocketErrors: socketErrors{Timeout: 4}}, 1},
		{"read-errors.txt", runResult{Elapsed: 1010 * time.Millisecond, SocketErrors: socketErrors{Read: 8185}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			out, err := os.ReadFile(filepath.Join("testdata", "wrk", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseWrk(out)
			if err != nil {
				t.Fatalf("parseWrk: %v", err)
			}
			if !sameResult(got, tt.want) {
				t.Errorf("parseWrk:\n got %+v\nwant %+v", got, tt.want)
			}
			if p := got.problems(); len(p) != tt.problems {
				t.Errorf("problems() = %q, want %d of them", p, tt.problems)
			}
		})
	}
}

// sameResult compares floats to 1e-9 relative: the samples' decimals do not
// survive binary floating point exactly.
func sameResult(a, b runResult) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*math.Max(math.Abs(x), math.Abs(y)) }
	fa, fb := a, b
	fa.ReqPerSec, fa.ThreadReqPerSec, fa.BytesRead = 0, 0, 0
	fb.ReqPerSec, fb.ThreadReqPerSec, fb.BytesRead = 0, 0, 0
	return fa == fb && near(a.ReqPerSec, b.ReqPerSec) && near(a.ThreadReqPerSec, b.ThreadReqPerSec) &&
		near(a.BytesRead, b.BytesRead)
}

func TestParseWrkRejectsIncompleteReports(t *testing.T) {
	full, err := os.ReadFile(filepath.Join("testdata", "wrk", "static-4k-ms.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, line, replace string }{
		{"no total", "requests in", ""},
		{"no rate", "Requests/sec:", ""},
		{"no --latency", "99%", ""},
		{"socket errors in an unknown shape", "Requests/sec:", "  Socket errors: connect 0, read 0\nRequests/sec: 1.00"},
		{"non-2xx count unreadable", "Requests/sec:", "  Non-2xx or 3xx responses: many\nRequests/sec: 1.00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var kept []string
			for _, line := range strings.Split(string(full), "\n") {
				if strings.Contains(line, tt.line) {
					line = tt.replace
				}
				kept = append(kept, line)
			}
			if r, err := parseWrk([]byte(strings.Join(kept, "\n"))); err == nil {
				t.Errorf("parseWrk: no error, result %+v", r)
			}
		})
	}
	if _, err := parseWrk([]byte("unable to connect to 127.0.0.1:18089 Connection refused\n")); err == nil {
		t.Error("parseWrk of a connection failure: no error")
	}
}

func TestWrkUnits(t *testing.T) {
	durations := []struct {
		in   string
		want time.Duration
	}{
		{"839.55us", 839550 * time.Nanosecond},
		{"0.00us", 0},
		{"1.53ms", 1530 * time.Microsecond},
		{"5.00s", 5 * time.Second},
		{"1.20s", 1200 * time.Millisecond},
		{"2.50m", 150 * time.Second},
		{"1.00h", time.Hour},
	}
	for _, tt := range durations {
		t.Run("duration "+tt.in, func(t *testing.T) {
			got, err := parseWrkDuration(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
	metrics := []struct {
		in   string
		want float64
	}{
		{"531.17", 531.17},
		{"76.48k", 76480},
		{"1.02M", 1.02e6},
		{"2.00G", 2e9},
	}
	for _, tt := range metrics {
		t.Run("metric "+tt.in, func(t *testing.T) {
			got, err := parseWrkMetric(tt.in)
			if err != nil || math.Abs(got-tt.want) > 1e-6*tt.want {
				t.Errorf("parseWrkMetric(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "12", "1.2x", "ms", "-nan%"} {
		if d, err := parseWrkDuration(bad); err == nil {
			t.Errorf("parseWrkDuration(%q) = %v, want an error", bad, d)
		}
	}
	if v, err := parseWrkBytes("128.55MB"); err != nil || math.Abs(v-128.55*(1<<20)) > 1 {
		t.Errorf("parseWrkBytes(128.55MB) = %v, %v", v, err)
	}
}

// A report in which wrk switched Req/Sec to M (a fast multi-threaded run);
// made from a real report by changing the figures.
func TestParseWrkMillions(t *testing.T) {
	out := []byte(`Running 5s test @ http://127.0.0.1:8080/
  4 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    95.12us   40.01us   2.10ms   90.00%
    Req/Sec     1.02M    10.00k    1.10M    70.00%
  Latency Distribution
     50%   90.00us
     75%  100.00us
     90%  120.00us
     99%  250.00us
  20400000 requests in 5.00s, 2.50GB read
Requests/sec: 4080000.00
Transfer/sec:    512.00MB
`)
	got, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := runResult{Requests: 20400000, Elapsed: 5 * time.Second, ReqPerSec: 4.08e6, ThreadReqPerSec: 1.02e6,
		LatencyAvg: 95120 * time.Nanosecond, P50: 90 * time.Microsecond, P99: 250 * time.Microsecond,
		BytesRead: 2.5 * (1 << 30)}
	if !sameResult(got, want) {
		t.Errorf("parseWrk:\n got %+v\nwant %+v", got, want)
	}
}

func TestWrkArgs(t *testing.T) {
	l := wrkLoad{URL: "http://127.0.0.1:1/4k.txt", Headers: []string{"Host: static.bench"},
		Duration: 2500 * time.Millisecond, Connections: 64, Threads: 1}
	want := []string{"-t", "1", "-c", "64", "-d", "3s", "--timeout", "10s", "--latency", "-H", "Host: static.bench", "http://127.0.0.1:1/4k.txt"}
	if got := l.args(); !slices.Equal(got, want) {
		t.Errorf("args() = %q, want %q", got, want)
	}
}
