package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The files under testdata/h2load are real h2load reports (nghttp2 1.52,
// Debian 12) against nginx over TLS: h2 with -m 10; --h1 to a missing path
// (every answer 404); --h1 to a port nothing listens on.
func TestParseH2loadSamples(t *testing.T) {
	tls13 := func(alpn string) *tlsInfo {
		return &tlsInfo{Protocol: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256", KeyExchange: "X25519", ALPN: alpn}
	}
	tests := []struct {
		file     string
		want     runResult
		problems int
	}{
		{"h2-nginx.txt", runResult{Requests: 47682, Elapsed: time.Second, ReqPerSec: 47682, BytesRead: 201361478,
			TLS: tls13("h2")}, 0},
		{"h1-404.txt", runResult{Requests: 44804, Elapsed: time.Second, ReqPerSec: 44804, BytesRead: 13799632,
			Non2xx3xx: 44804, TLS: tls13("http/1.1")}, 1},
		{"refused.txt", runResult{Elapsed: time.Second}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			out, err := os.ReadFile(filepath.Join("testdata", "h2load", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseH2load(out)
			if err != nil {
				t.Fatalf("parseH2load: %v", err)
			}
			gotTLS, wantTLS := got.TLS, tt.want.TLS
			got.TLS, tt.want.TLS = nil, nil
			if !sameResult(got, tt.want) {
				t.Errorf("parseH2load:\n got %+v\nwant %+v", got, tt.want)
			}
			if (gotTLS == nil) != (wantTLS == nil) || (gotTLS != nil && *gotTLS != *wantTLS) {
				t.Errorf("TLS = %+v, want %+v", gotTLS, wantTLS)
			}
			if p := got.problems(); len(p) != tt.problems {
				t.Errorf("problems() = %q, want %d of them", p, tt.problems)
			}
		})
	}
}

// Stream errors and timeouts are in h2load's "failed" without a status: they
// are Failed, and make the run untrustworthy.
func TestParseH2loadStreamErrors(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "h2load", "h2-nginx.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(out),
		"47682 done, 47682 succeeded, 0 failed, 0 errored, 0 timeout",
		"47682 done, 47670 succeeded, 12 failed, 10 errored, 2 timeout", 1)
	s = strings.Replace(s, "status codes: 47682 2xx, 0 3xx, 0 4xx, 0 5xx", "status codes: 47665 2xx, 0 3xx, 5 4xx, 0 5xx", 1)
	got, err := parseH2load([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	if got.Failed != 7 || got.Non2xx3xx != 5 {
		t.Errorf("Failed = %d, Non2xx3xx = %d; want 7 (12 failed − 5 answered 4xx) and 5", got.Failed, got.Non2xx3xx)
	}
	if p := got.problems(); len(p) != 2 {
		t.Errorf("problems() = %q, want 2", p)
	}
}

func TestParseH2loadRejectsIncompleteReports(t *testing.T) {
	full, err := os.ReadFile(filepath.Join("testdata", "h2load", "h2-nginx.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, line, replace string }{
		{"no finished line", "finished in", ""},
		{"no requests line", "requests:", ""},
		{"no status line", "status codes:", ""},
		{"requests in another shape", "requests:", "requests: 10 total, 10 begun"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var lines []string
			for _, l := range strings.Split(string(full), "\n") {
				if strings.HasPrefix(l, tt.line) {
					if tt.replace == "" {
						continue
					}
					l = tt.replace
				}
				lines = append(lines, l)
			}
			if _, err := parseH2load([]byte(strings.Join(lines, "\n"))); err == nil {
				t.Error("parseH2load accepted an incomplete report")
			}
		})
	}
}

func TestParseH2loadLog(t *testing.T) {
	var b strings.Builder
	for i := 1; i <= 100; i++ { // 1..100 µs
		b.WriteString("1795334694523852\t200\t" + strconv.Itoa(i) + "\n")
	}
	b.WriteString("1795334694523852\t-1\t999999\n") // a failed stream is no latency
	avg, p50, p99, err := parseH2loadLog([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if avg != 50500*time.Nanosecond || p50 != 50*time.Microsecond || p99 != 99*time.Microsecond {
		t.Errorf("avg %v, p50 %v, p99 %v; want 50.5µs, 50µs, 99µs", avg, p50, p99)
	}
	if _, _, _, err := parseH2loadLog([]byte("1\t200\n")); err == nil {
		t.Error("a line of two columns was accepted")
	}
}
