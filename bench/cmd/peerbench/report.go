package main

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Scenario statuses.
const (
	statusMeasured = "measured"
	statusNotBuilt = "not built"
	statusFailed   = "failed"
)

// report is everything one run produced; it is written as JSON as is.
type report struct {
	Date      time.Time        `json:"date"`
	Machine   machine          `json:"machine"`
	Settings  settings         `json:"settings"`
	Scenarios []scenarioResult `json:"scenarios"`
	Targets   []targetResult   `json:"targets"`
}

type scenarioResult struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Note   string `json:"note,omitempty"`
	// Base is the server the ratios are of (tollgate).
	Base    string         `json:"base,omitempty"`
	Servers []serverResult `json:"servers,omitempty"`
	Memory  []memoryResult `json:"memory,omitempty"`
	Idle    []idleResult   `json:"idle,omitempty"`
	// Registry has one entry per size of registry-scale.
	Registry []registryResult `json:"registry,omitempty"`
	// Cluster has one entry per size of registry-cluster.
	Cluster []clusterResult `json:"cluster,omitempty"`
}

type serverResult struct {
	Server string `json:"server"`
	// ReqPerSec and P99 are medians over the rounds.
	ReqPerSec float64       `json:"req_per_sec_median"`
	P99       time.Duration `json:"p99_median_ns"`
	// BaseRatio is base req/s ÷ this server's: the median of the per-round
	// ratios. Absent for the base itself.
	BaseRatio *float64 `json:"base_ratio,omitempty"`
	// BaseRatios are the per-round ratios the median is taken of.
	BaseRatios []float64 `json:"base_ratios,omitempty"`
	// Valid is false when a run failed, had non-2xx/3xx answers or socket
	// errors, or the server answered the check wrongly; Problems says which.
	Valid bool `json:"valid"`
	// ServerBusy is the median share of a core the server used during the
	// runs (ServerCPU ÷ Wall), CPUPerRequest the median server CPU time per
	// completed request (per handshake in tls-handshakes). Zero when not
	// measured: servers peerbench did not start (gitea-raw), cold misses.
	ServerBusy    float64       `json:"server_busy_median,omitempty"`
	CPUPerRequest time.Duration `json:"server_cpu_per_request_median_ns,omitempty"`
	// Latency is set instead of Runs by the cold-miss scenario; ReqPerSec
	// is then 1 ÷ its median and P99 its p90.
	Latency  *latencyResult `json:"latency,omitempty"`
	Problems []string       `json:"problems,omitempty"`
	Runs     []runResult    `json:"runs,omitempty"`
}

// machine describes where the figures were measured.
type machine struct {
	CPUs       int               `json:"cpus"`
	CPUModel   string            `json:"cpu_model"`
	Kernel     string            `json:"kernel"`
	LoadAvg    string            `json:"loadavg_at_start"`
	GoVersion  string            `json:"go_version"`
	Tollgate   string            `json:"tollgate"`
	TollgateGo string            `json:"tollgate_go_version"`
	Peers      map[string]string `json:"peers"`
	Pinning    string            `json:"pinning"`
}

func describeMachine(tollgateBin string, tools map[string]string, cpu cpuPlan) machine {
	m := machine{
		CPUs:      runtime.NumCPU(),
		CPUModel:  cpuModel(),
		Kernel:    readTrim("/proc/sys/kernel/osrelease"),
		LoadAvg:   strings.Join(first(strings.Fields(readTrim("/proc/loadavg")), 3), " "),
		GoVersion: runtime.Version(),
		Tollgate:  tollgateVersion(tollgateBin),
		Peers:     peerVersions(tools),
		Pinning:   cpu.Description,
	}
	if bi, err := buildinfo.ReadFile(tollgateBin); err == nil {
		m.TollgateGo = bi.GoVersion
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// target is a goal of the issue: base ÷ peer req/s at least Min.
type target struct {
	Scenario, Peer, Text string
	Min                  float64
}

var targets = []target{
	{"static-4k", srvNginx, "static 4 KiB h1 ≥ 1.0× nginx", 1.0},
	{"static-4k", srvCaddy, "static 4 KiB h1 ≥ 4× Caddy", 4.0},
	{"proxy", srvNginx, "reverse proxy ≥ 1.0× nginx", 1.0},
	{"https-h1", srvNginx, "HTTPS h1 keep-alive ≥ 0.9× nginx", 0.9},
	{"https-h2", srvCaddy, "HTTPS h2 ≥ 2× Caddy", 2.0},
	{"metering", srvMeterOff, "metering costs < 3 % (on ÷ off ≥ 0.97)", 0.97},
}

type targetResult struct {
	Target string   `json:"target"`
	Ratio  *float64 `json:"ratio,omitempty"`
	// Measured is the figure of a target that is not a ratio (registry).
	Measured string `json:"measured,omitempty"`
	Verdict  string `json:"verdict"` // met, missed, not built, invalid, not run
	// LoadBound is set when one of the two servers used less than
	// saturatedBusy of its core: the load generator, not that server, set
	// the pace, and the req/s ratio understates the idler server.
	// CPURatio is then the same comparison per server CPU second.
	LoadBound bool     `json:"load_bound,omitempty"`
	CPURatio  *float64 `json:"cpu_ratio,omitempty"`
}

// saturatedBusy is the share of its core under which a server is taken to
// have waited for the load generator.
const saturatedBusy = 0.9

// fmtMeasured is a target's ratio, with the per-CPU-second one when the run
// was load-generator bound.
func (t targetResult) fmtMeasured() string {
	if t.Measured != "" {
		return t.Measured
	}
	if !t.LoadBound {
		return fmtRatio(t.Ratio)
	}
	return fmt.Sprintf("%s (load-generator bound; per server CPU second %s)", fmtRatio(t.Ratio), fmtRatio(t.CPURatio))
}

func evaluateTargets(results []scenarioResult) []targetResult {
	out := make([]targetResult, 0, len(targets))
	for _, t := range targets {
		tr := targetResult{Target: t.Text, Verdict: "not run"}
		for _, sc := range results {
			if sc.ID != t.Scenario {
				continue
			}
			if sc.Status == statusNotBuilt {
				tr.Verdict = statusNotBuilt
			}
			for _, row := range sc.Servers {
				if row.Server != t.Peer || row.BaseRatio == nil {
					continue
				}
				tr.Ratio = row.BaseRatio
				base := sc.Servers[0]
				if row.ServerBusy > 0 && base.ServerBusy > 0 && (row.ServerBusy < saturatedBusy || base.ServerBusy < saturatedBusy) {
					r := float64(row.CPUPerRequest) / float64(base.CPUPerRequest)
					tr.LoadBound, tr.CPURatio = true, &r
				}
				switch {
				case !row.Valid || !sc.Servers[0].Valid:
					tr.Verdict = "invalid"
				case *row.BaseRatio >= t.Min:
					tr.Verdict = "met"
				default:
					tr.Verdict = "missed"
				}
			}
		}
		out = append(out, tr)
	}
	out = append(out, evaluateRegistryTargets(results)...)
	return append(out, evaluateClusterTargets(results)...)
}

// writeResults writes DATE.md, DATE.json and latest.md under dir and returns
// the paths written.
func writeResults(dir string, rep report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stamp := rep.Date.UTC().Format("2006-01-02-1504")
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	md := markdown(rep)
	files := []struct {
		name string
		data []byte
	}{{stamp + ".md", md}, {stamp + ".json", append(js, '\n')}, {"latest.md", md}}
	var paths []string
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return paths, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// markdown renders the report for bench/results/*.md.
func markdown(rep report) []byte {
	var b bytes.Buffer
	m, s := rep.Machine, rep.Settings
	fmt.Fprintf(&b, "# tollgate peer benchmark, %s\n\n", rep.Date.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- Machine: %d CPUs, %s, kernel %s, load average at start %s\n", m.CPUs, m.CPUModel, m.Kernel, m.LoadAvg)
	fmt.Fprintf(&b, "- Pinning: %s\n", m.Pinning)
	fmt.Fprintf(&b, "- tollgate: %s (built with %s); harness %s\n", m.Tollgate, m.TollgateGo, m.GoVersion)
	fmt.Fprintf(&b, "- Peers: %s; %s; %s; %s\n", m.Peers["nginx"], "caddy "+m.Peers["caddy"], m.Peers["wrk"], m.Peers["h2load"])
	fmt.Fprintf(&b, "- Load: wrk -t%d -c%d --timeout %s, %s per run, %d rounds (each server once per round, in turn), %s warm-up\n",
		s.Threads, s.Connections, wrkTimeout, s.Duration, s.Rounds, s.Warmup)
	if hasTLS(rep) {
		fmt.Fprintf(&b, "- HTTPS: SNI and Host %s on 127.0.0.1, ECDSA P-256 certificates from one Pebble CA (tollgate-tls "+
			"obtains its own on demand in the warm-up); h2load -t%d -c%d (--h1, or h2 with -m%d); handshakes: "+
			"peerbench handshake-client, %d concurrent new connections, X25519, no session resumption\n",
			hostTLS, s.Threads, s.Connections, s.Streams, s.Connections)
	}
	b.WriteString("\n")
	b.WriteString("req/s and p99 are medians over the rounds; the ratio is tollgate's req/s ÷ the server's, the median of the per-round ratios.\n\n")
	writeTable(&b, rep, true)
	for _, mem := range memoryScenarios(rep) {
		fmt.Fprintf(&b, "\n## %s\n\n", mem.Title)
		writeMemoryTable(&b, mem, true)
	}
	for _, sc := range rep.Scenarios {
		if sc.Idle != nil {
			fmt.Fprintf(&b, "\n## %s\n\n", sc.Title)
			writeIdleTable(&b, sc, true)
		}
	}
	for _, sc := range rep.Scenarios {
		if sc.Registry != nil {
			fmt.Fprintf(&b, "\n## %s\n\n", sc.Title)
			writeRegistryTable(&b, sc, true)
		}
		if sc.Cluster != nil {
			fmt.Fprintf(&b, "\n## %s\n\n", sc.Title)
			writeClusterTable(&b, sc, true)
		}
	}
	b.WriteString("\n## Targets (issue 4; registry: issue 17)\n\n| target | measured | verdict |\n|---|---|---|\n")
	for _, t := range rep.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t.Target, t.fmtMeasured(), t.Verdict)
	}
	if notes := problemNotes(rep); len(notes) > 0 {
		b.WriteString("\n## Problems\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.Bytes()
}

// hasTLS tells whether an HTTPS scenario was measured.
func hasTLS(rep report) bool {
	for _, sc := range rep.Scenarios {
		if len(sc.Servers) > 0 && sc.Servers[0].Server == srvTollgateTLS {
			return true
		}
	}
	return false
}

// memoryScenarios are the measured memory scenarios, in table order.
func memoryScenarios(rep report) []scenarioResult {
	var out []scenarioResult
	for _, sc := range rep.Scenarios {
		if sc.Memory != nil {
			out = append(out, sc)
		}
	}
	return out
}

// problemNotes lists every problem on one line each (Markdown lists and
// tables cannot hold line breaks).
func problemNotes(rep report) []string {
	var out []string
	add := func(id, server, p string) {
		out = append(out, fmt.Sprintf("%s, %s: %s", id, server, strings.Join(strings.Fields(p), " ")))
	}
	for _, sc := range rep.Scenarios {
		for _, row := range sc.Servers {
			for _, p := range row.Problems {
				add(sc.ID, row.Server, p)
			}
		}
		for _, m := range sc.Memory {
			for _, p := range m.Problems {
				add(sc.ID, m.Server, p)
			}
		}
		for _, m := range sc.Idle {
			for _, p := range m.Problems {
				add(sc.ID, m.Server, p)
			}
		}
		for _, r := range sc.Registry {
			for _, p := range r.Problems {
				add(sc.ID, fmt.Sprintf("tollgate, %s sites", groupThousands(int64(r.Sites))), p)
			}
		}
		for _, r := range sc.Cluster {
			for _, p := range r.Problems {
				add(sc.ID, fmt.Sprintf("tollgate cluster, %s sites", groupThousands(int64(r.Sites))), p)
			}
		}
	}
	return out
}
