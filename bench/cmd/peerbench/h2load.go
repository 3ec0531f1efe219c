package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// h2loadLoad is one h2load run over TLS: keep-alive connections to
// ConnectTo, with the host of URL as SNI and :authority (Host for h1), which
// is how a client reaches a name that does not resolve to the server (wrk
// takes SNI and address from the same URL host).
type h2loadLoad struct {
	URL       string // https://bench.test:port/path
	ConnectTo string // 127.0.0.1:port
	// H1 forces HTTP/1.1 (--h1); otherwise h2 is negotiated by ALPN.
	H1 bool
	// Streams is the number of concurrent streams per h2 connection (-m).
	// For h1 it is 1: h2load would pipeline otherwise, which wrk and
	// browsers do not.
	Streams     int
	Duration    time.Duration
	Connections int
	Threads     int
	// LogFile receives h2load's per-request log (--log-file), read back for
	// the latency percentiles h2load does not print.
	LogFile string
}

// args is the h2load command line; -D takes milliseconds.
func (l h2loadLoad) args() []string {
	streams := l.Streams
	if l.H1 {
		streams = 1
	}
	a := []string{"-c", strconv.Itoa(l.Connections), "-t", strconv.Itoa(l.Threads),
		"-m", strconv.Itoa(max(streams, 1)), "-D", strconv.FormatInt(max(l.Duration.Milliseconds(), 1), 10) + "ms",
		"--connect-to", l.ConnectTo, "--log-file", l.LogFile}
	if l.H1 {
		a = append(a, "--h1")
	}
	return append(a, l.URL)
}

// runH2load runs h2load (pinned by pin), parses its report and takes p50 and
// p99 from its request log.
func runH2load(ctx context.Context, pin []string, l h2loadLoad) (runResult, error) {
	defer os.Remove(l.LogFile)
	out, err := runTool(ctx, pin, "h2load", l.URL, l.args())
	if err != nil {
		return runResult{}, err
	}
	r, err := parseH2load(out)
	if err != nil {
		return r, fmt.Errorf("h2load %s: %w\n%s", l.URL, err, out)
	}
	log, err := os.ReadFile(l.LogFile)
	if err != nil {
		return r, fmt.Errorf("h2load request log: %w", err)
	}
	if r.LatencyAvg, r.P50, r.P99, err = parseH2loadLog(log); err != nil {
		return r, fmt.Errorf("h2load request log: %w", err)
	}
	return r, nil
}

// parseH2load reads h2load's text report (nghttp2 1.52). Requests are the
// done ones (answered, whatever the status: its req/s counts those, as wrk
// does); 4xx and 5xx answers are Non2xx3xx, as for wrk. h2load's "failed"
// count includes those answers too, so Failed is the rest of it: requests
// that got no answer (stream errors, resets, timeouts). It fails when the
// lines every report has are missing, so a changed format is noticed rather
// than read as zeros.
func parseH2load(out []byte) (runResult, error) {
	var r runResult
	var tls tlsInfo
	var sawFinished, sawRequests, sawStatus bool
	var failed int64 // h2load's "failed", answers of 400 and more included
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		var err error
		switch {
		case strings.HasPrefix(line, "TLS Protocol: "):
			tls.Protocol = strings.TrimPrefix(line, "TLS Protocol: ")
		case strings.HasPrefix(line, "Cipher: "):
			tls.Cipher = strings.TrimPrefix(line, "Cipher: ")
		case strings.HasPrefix(line, "Server Temp Key: "):
			// "Server Temp Key: X25519 253 bits"
			tls.KeyExchange, _, _ = strings.Cut(strings.TrimPrefix(line, "Server Temp Key: "), " ")
		case strings.HasPrefix(line, "Application protocol: "):
			tls.ALPN = strings.TrimPrefix(line, "Application protocol: ")
		case strings.HasPrefix(line, "finished in "):
			// "finished in 2.02s, 22420.50 req/s, 90.30MB/s"
			f := strings.Fields(line)
			if len(f) < 5 || f[4] != "req/s," {
				err = errors.New("unexpected shape")
				break
			}
			if r.Elapsed, err = parseWrkDuration(strings.TrimSuffix(f[2], ",")); err == nil {
				r.ReqPerSec, err = strconv.ParseFloat(f[3], 64)
			}
			sawFinished = true
		case strings.HasPrefix(line, "requests: "):
			// "requests: 44841 total, 45481 started, 44841 done, 44841
			// succeeded, 0 failed, 0 errored, 0 timeout"
			var n map[string]int64
			if n, err = countsByLabel(strings.TrimPrefix(line, "requests: ")); err == nil {
				r.Requests, failed = n["done"], n["failed"]
				err = needLabels(n, "done", "failed")
			}
			sawRequests = true
		case strings.HasPrefix(line, "status codes: "):
			// "status codes: 44841 2xx, 0 3xx, 0 4xx, 0 5xx"
			var n map[string]int64
			if n, err = countsByLabel(strings.TrimPrefix(line, "status codes: ")); err == nil {
				r.Non2xx3xx = n["4xx"] + n["5xx"]
				err = needLabels(n, "4xx", "5xx")
			}
			sawStatus = true
		case strings.HasPrefix(line, "traffic: "):
			// "traffic: 180.59MB (189366679) total, ..."
			f := strings.Fields(line)
			if len(f) < 3 {
				err = errors.New("unexpected shape")
				break
			}
			r.BytesRead, err = strconv.ParseFloat(strings.Trim(f[2], "()"), 64)
		}
		if err != nil {
			return r, fmt.Errorf("parsing %q: %w", line, err)
		}
	}
	switch {
	case !sawFinished:
		return r, errors.New(`no "finished in" line`)
	case !sawRequests:
		return r, errors.New(`no "requests:" line`)
	case !sawStatus:
		return r, errors.New(`no "status codes:" line`)
	}
	r.Failed = max(failed-r.Non2xx3xx, 0)
	if tls != (tlsInfo{}) {
		r.TLS = &tls
	}
	return r, nil
}

// countsByLabel reads "N label, N label, ..." into label → N.
func countsByLabel(s string) (map[string]int64, error) {
	n := map[string]int64{}
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return nil, fmt.Errorf("%q is not \"count label\"", part)
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, err
		}
		n[f[1]] = v
	}
	return n, nil
}

func needLabels(n map[string]int64, labels ...string) error {
	for _, l := range labels {
		if _, ok := n[l]; !ok {
			return fmt.Errorf("no %q count", l)
		}
	}
	return nil
}

// parseH2loadLog reads h2load's --log-file (tab-separated: start time in µs,
// status, µs to the end of the response; status -1 for a failed stream) and
// returns the mean, the median and the 99th percentile (nearest rank) of the
// completed requests' latencies.
func parseH2loadLog(log []byte) (avg, p50, p99 time.Duration, err error) {
	var lat []float64
	sum := 0.0
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) < 3 {
			return 0, 0, 0, fmt.Errorf("line %q: want 3 columns", sc.Text())
		}
		if f[1] == "-1" {
			continue // failed: counted in the report's "failed"
		}
		us, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("line %q: %w", sc.Text(), err)
		}
		lat = append(lat, us)
		sum += us
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, err
	}
	if len(lat) == 0 {
		return 0, 0, 0, nil
	}
	us := func(v float64) time.Duration { return time.Duration(math.Round(v * float64(time.Microsecond))) }
	return us(sum / float64(len(lat))), us(percentile(lat, 0.5)), us(percentile(lat, 0.99)), nil
}
