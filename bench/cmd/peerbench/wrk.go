package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run reported. Durations are parsed from wrk's
// own units (us, ms, s, m, h); counts from its metric units (k, M, G).
type runResult struct {
	// Requests is the number of completed requests.
	Requests int64 `json:"requests"`
	// Elapsed is how long the run lasted by wrk's clock.
	Elapsed time.Duration `json:"elapsed_ns"`
	// ReqPerSec is the "Requests/sec" line: all threads together.
	ReqPerSec float64 `json:"req_per_sec"`
	// ThreadReqPerSec is the mean of the per-thread "Req/Sec" column.
	ThreadReqPerSec float64 `json:"thread_req_per_sec"`
	// LatencyAvg is the mean latency; P50 and P99 come from --latency.
	LatencyAvg time.Duration `json:"latency_avg_ns"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	// BytesRead is the "N requests in T, XB read" figure (binary units).
	BytesRead float64 `json:"bytes_read"`
	// Non2xx3xx counts responses with a status of 400 or more.
	Non2xx3xx int64 `json:"non_2xx_3xx"`
	// SocketErrors are wrk's connect, read, write and timeout errors.
	SocketErrors socketErrors `json:"socket_errors"`
	// Failed counts what h2load reports as failed, errored or timed out
	// requests, and the handshake client's failed connections; wrk reports
	// its failures as SocketErrors.
	Failed int64 `json:"failed,omitempty"`
	// FirstError is the handshake client's first failure, for the report.
	FirstError string `json:"first_error,omitempty"`
	// TLS is what was negotiated (h2load and the handshake client).
	TLS *tlsInfo `json:"tls,omitempty"`
	// ServerCPU is the CPU time (user + system, all threads) the server
	// under test used from just before the tool started until it exited,
	// and Wall that span; ServerCPU ÷ Wall is how busy its core was. Zero
	// for servers peerbench did not start (gitea-raw).
	ServerCPU time.Duration `json:"server_cpu_ns,omitempty"`
	Wall      time.Duration `json:"wall_ns,omitempty"`
}

// tlsInfo is the TLS connection a run used, as the client saw it.
type tlsInfo struct {
	// Protocol is "TLSv1.3" or "TLSv1.2".
	Protocol string `json:"protocol"`
	Cipher   string `json:"cipher"`
	// KeyExchange is the ECDHE group ("X25519").
	KeyExchange string `json:"key_exchange"`
	// ALPN is the application protocol ("h2", "http/1.1").
	ALPN string `json:"alpn"`
}

type socketErrors struct {
	Connect int64 `json:"connect"`
	Read    int64 `json:"read"`
	Write   int64 `json:"write"`
	Timeout int64 `json:"timeout"`
}

func (e socketErrors) total() int64 { return e.Connect + e.Read + e.Write + e.Timeout }

func (e socketErrors) String() string {
	var parts []string
	for _, k := range []struct {
		name string
		n    int64
	}{{"connect", e.Connect}, {"read", e.Read}, {"write", e.Write}, {"timeout", e.Timeout}} {
		if k.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k.name, k.n))
		}
	}
	return strings.Join(parts, ", ")
}

// problems says why a run cannot be trusted; empty means it can.
func (r runResult) problems() []string {
	var p []string
	if r.Requests == 0 {
		p = append(p, "no request completed")
	}
	if r.Non2xx3xx > 0 {
		p = append(p, fmt.Sprintf("%d non-2xx/3xx responses", r.Non2xx3xx))
	}
	if n := r.SocketErrors.total(); n > 0 {
		p = append(p, fmt.Sprintf("%d socket errors (%s)", n, r.SocketErrors))
	}
	if r.Failed > 0 {
		msg := fmt.Sprintf("%d failed requests or handshakes", r.Failed)
		if r.FirstError != "" {
			msg += " (first: " + r.FirstError + ")"
		}
		p = append(p, msg)
	}
	return p
}

// wrkLoad is one wrk invocation: where, with which headers, how hard.
type wrkLoad struct {
	URL         string
	Headers     []string // "Name: value"
	Duration    time.Duration
	Connections int
	Threads     int
}

// wrkTimeout is how long wrk waits for an answer before it counts a
// timeout, which makes the run invalid. wrk's default of 2 s is about the
// 99th percentile of Gitea's raw endpoint under 64 connections (the
// pages-hit row's peer), whose slow answers are its measure, not a fault;
// a server that stops answering still fails the run.
const wrkTimeout = "10s"

// args is the wrk command line. wrk takes whole seconds only.
func (l wrkLoad) args() []string {
	secs := int((l.Duration + time.Second - 1) / time.Second)
	a := []string{"-t", strconv.Itoa(l.Threads), "-c", strconv.Itoa(l.Connections),
		"-d", strconv.Itoa(max(secs, 1)) + "s", "--timeout", wrkTimeout, "--latency"}
	for _, h := range l.Headers {
		a = append(a, "-H", h)
	}
	return append(a, l.URL)
}

// runWrk runs wrk (pinned by pin) and parses its report.
func runWrk(ctx context.Context, pin []string, l wrkLoad) (runResult, error) {
	out, err := runTool(ctx, pin, "wrk", l.URL, l.args())
	if err != nil {
		return runResult{}, err
	}
	r, err := parseWrk(out)
	if err != nil {
		return r, fmt.Errorf("wrk %s: %w\n%s", l.URL, err, out)
	}
	return r, nil
}

// runTool runs a load generator (pinned by pin) and returns its standard
// output; a failure carries what it printed.
func runTool(ctx context.Context, pin []string, tool, url string, args []string) ([]byte, error) {
	argv := slices.Concat(pin, []string{tool}, args)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s%s", tool, url, err,
			strings.TrimSpace(errb.String()), strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// parseWrk reads wrk 4.x's text report (run with --latency). It fails when
// the lines every report has (requests, Requests/sec, the 99% percentile)
// are missing, so a changed format is noticed rather than read as zeros.
func parseWrk(out []byte) (runResult, error) {
	var r runResult
	var sawTotal, sawRate, sawP99 bool
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var err error
		switch {
		case f[0] == "Latency" && len(f) == 5: // not "Latency Distribution"
			r.LatencyAvg, err = parseWrkDuration(f[1])
		case f[0] == "Req/Sec" && len(f) == 5:
			r.ThreadReqPerSec, err = parseWrkMetric(f[1])
		case f[0] == "50%" && len(f) == 2:
			r.P50, err = parseWrkDuration(f[1])
		case f[0] == "99%" && len(f) == 2:
			r.P99, err = parseWrkDuration(f[1])
			sawP99 = true
		case len(f) >= 6 && f[1] == "requests" && f[2] == "in":
			// "31079 requests in 2.00s, 128.55MB read"
			if r.Requests, err = strconv.ParseInt(f[0], 10, 64); err == nil {
				if r.Elapsed, err = parseWrkDuration(strings.TrimSuffix(f[3], ",")); err == nil {
					r.BytesRead, err = parseWrkBytes(f[4])
				}
			}
			sawTotal = true
		case f[0] == "Non-2xx":
			// "Non-2xx or 3xx responses: 12": an unexpected shape is an
			// error, never silently zero.
			r.Non2xx3xx, err = strconv.ParseInt(f[len(f)-1], 10, 64)
		case f[0] == "Socket":
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			if len(f) != 10 {
				err = errors.New("unexpected socket errors line")
				break
			}
			e := &r.SocketErrors
			for i, dst := range []*int64{&e.Connect, &e.Read, &e.Write, &e.Timeout} {
				var perr error
				*dst, perr = strconv.ParseInt(strings.TrimSuffix(f[3+2*i], ","), 10, 64)
				err = errors.Join(err, perr)
			}
		case f[0] == "Requests/sec:" && len(f) == 2:
			r.ReqPerSec, err = parseWrkMetric(f[1])
			sawRate = true
		}
		if err != nil {
			return r, fmt.Errorf("parsing %q: %w", sc.Text(), err)
		}
	}
	switch {
	case !sawTotal:
		return r, errors.New(`no "N requests in T" line`)
	case !sawRate:
		return r, errors.New(`no "Requests/sec:" line`)
	case !sawP99:
		return r, errors.New(`no "99%" latency line (was --latency given?)`)
	}
	return r, nil
}

// wrk prints times with format_time_us: us, ms, s, then m and h past a minute.
var wrkTimeUnits = []struct {
	suffix string
	unit   time.Duration
}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}

func parseWrkDuration(s string) (time.Duration, error) {
	for _, u := range wrkTimeUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			return time.Duration(math.Round(v * float64(u.unit))), nil
		}
	}
	return 0, fmt.Errorf("duration %q: no unit", s)
}

// parseWrkMetric reads format_metric output: "531.17", "76.48k", "1.02M".
func parseWrkMetric(s string) (float64, error) {
	return parseScaled(s, 1000, "kMGTP")
}

// parseWrkBytes reads format_binary output followed by "B": "0.92KB", "1.09GB".
func parseWrkBytes(s string) (float64, error) {
	num, ok := strings.CutSuffix(s, "B")
	if !ok {
		return 0, fmt.Errorf("bytes %q: no B suffix", s)
	}
	return parseScaled(num, 1024, "KMGTP")
}

func parseScaled(s string, base float64, prefixes string) (float64, error) {
	mult := 1.0
	if s != "" {
		if i := strings.IndexByte(prefixes, s[len(s)-1]); i >= 0 {
			s = s[:len(s)-1]
			for range i + 1 {
				mult *= base
			}
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("number %q: %w", s, err)
	}
	return v * mult, nil
}
