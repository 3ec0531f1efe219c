package main

import (
	"fmt"
	"io"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// The report of registry-scale: its targets and its table.

// sizedTarget is a goal of the registry issue at one size, judged on the
// row of that size of a scenario whose rows are R.
type sizedTarget[R any] struct {
	Text  string
	Sites int
	// Measure is the figure, whether it meets the goal, and false when it
	// was not measured.
	Measure func(R) (figure string, met, measured bool)
}

const registryMaxRSS = 1.5e9 // 1.5 GB

var registryTargets = []sizedTarget[registryResult]{
	{"bulk import of 100,000 sites < 60 s", 100_000, func(r registryResult) (string, bool, bool) {
		return fmt.Sprintf("%s (%s sites/s)", fmtLatency(r.Import), groupThousands(int64(r.ImportSitesPerSec))),
			r.Import < time.Minute, r.Import > 0
	}},
	{"single write p99 at 1,000,000 sites < 5 ms", 1_000_000, func(r registryResult) (string, bool, bool) {
		return fmtLatency(r.WriteP99), r.WriteP99 < 5*time.Millisecond, r.Writes == registryWrites
	}},
	{"RSS at 1,000,000 sites ≤ 1.5 GB (1.5 × 10⁹ bytes)", 1_000_000, func(r registryResult) (string, bool, bool) {
		top := max(r.ImportRSS, r.ProbedRSS, r.RestartRSS)
		return fmt.Sprintf("%s (highest of after import, after the GETs, after restart; %s as the import ended, peak %s)",
				fmtBytes(top), fmtBytes(r.ImportEndRSS), fmtBytes(r.PeakRSS)), top <= registryMaxRSS,
			r.ImportRSS > 0 && r.ProbedRSS > 0 && r.RestartRSS > 0
	}},
	{"start-up to ready at 1,000,000 sites ≤ 30 s", 1_000_000, func(r registryResult) (string, bool, bool) {
		return fmtLatency(r.Startup), r.Startup <= 30*time.Second, r.Startup > 0
	}},
}

// evaluateRegistryTargets judges registry-scale's sizes against the goals;
// a size that was not run is "not run".
func evaluateRegistryTargets(results []scenarioResult) []targetResult {
	var rows []registryResult
	for _, sc := range results {
		if sc.Registry != nil {
			rows = sc.Registry
		}
	}
	return judgeSized(registryTargets, rows, func(r registryResult) (int, bool) { return r.Sites, r.Valid })
}

// judgeSized judges each target on the row of its size (rowOf: the row's
// sites and validity); a size without a row is "not run".
func judgeSized[R any](targets []sizedTarget[R], rows []R, rowOf func(R) (sites int, valid bool)) []targetResult {
	out := make([]targetResult, 0, len(targets))
	for _, t := range targets {
		tr := targetResult{Target: t.Text, Verdict: "not run"}
		for _, r := range rows {
			sites, valid := rowOf(r)
			if sites != t.Sites {
				continue
			}
			figure, met, measured := t.Measure(r)
			switch {
			case !measured:
				tr.Measured, tr.Verdict = "n/a", "invalid"
			case !valid:
				tr.Measured, tr.Verdict = figure, "invalid"
			case met:
				tr.Measured, tr.Verdict = figure, "met"
			default:
				tr.Measured, tr.Verdict = figure, "missed"
			}
		}
		out = append(out, tr)
	}
	return out
}

// writeRegistryTable writes registry-scale's figures, one row per size.
func writeRegistryTable(w io.Writer, sc scenarioResult, md bool) {
	head := []string{"sites", "bulk import (time, sites/s)", "single write p50 / p99 / max", "RSS as the import ends / after it (returned after)", "RSS per site",
		fmt.Sprintf("RSS after %s GETs", groupThousands(registryProbes)), "peak RSS", "open files", "start-up to ready", "RSS after restart", "valid"}
	var rows [][]string
	for _, r := range sc.Registry {
		valid := "yes"
		if !r.Valid {
			valid = "INVALID"
		}
		imp, write, perSite, start := "n/a", "n/a", "n/a", "n/a"
		if r.Import > 0 {
			imp = fmt.Sprintf("%s (%s/s)", fmtLatency(r.Import), groupThousands(int64(r.ImportSitesPerSec)))
		}
		if r.Writes > 0 {
			write = fmtLatency(r.WriteP50) + " / " + fmtLatency(r.WriteP99) + " / " + fmtLatency(r.WriteMax)
		}
		if r.RSSPerSite > 0 {
			perSite = fmt.Sprintf("%s B", groupThousands(int64(r.RSSPerSite)))
		}
		if r.Startup > 0 {
			start = fmtLatency(r.Startup)
		}
		files := "n/a"
		if r.OpenFiles > 0 {
			files = groupThousands(int64(r.OpenFiles))
		}
		after := fmtBytes(r.ImportEndRSS) + " / " + fmtBytes(r.ImportRSS)
		if r.Settle > 0 {
			after += " (" + fmtLatency(r.Settle) + ")"
		}
		rows = append(rows, []string{groupThousands(int64(r.Sites)), imp, write, after, perSite,
			fmtBytes(r.ProbedRSS), fmtBytes(r.PeakRSS), files, start, fmtBytes(r.RestartRSS), valid})
	}
	writeGrid(w, head, rows, md)
	source := "the benchmark directory (`dir`)"
	if len(sc.Registry) > 0 && sc.Registry[0].Source == sites.SourceUpstream {
		source = "the shared upstream (`upstream`, -registry-source upstream: no descriptor per site)"
	}
	note := fmt.Sprintf("tollgate only, a fresh process and store per size, pinned like the others; every site serves "+source+". "+
		"Bulk import: N orgs, N sites and N domains (one each per site) as NDJSON through POST /v1/import, %s records a request, one after another over one "+
		"keep-alive connection; the time includes peerbench writing the NDJSON. RSS as the import ends: when its last batch "+
		"is answered; after it: once tollgate has returned the import's memory (tollgate_memory_returns_total; it collects "+
		"once, a second after a burst of %s records or more), the time in brackets. Single write: %d POST /v1/orgs after that, "+
		"one after another. RSS per site: (RSS after import − RSS at start) ÷ sites, its org and domain included. Peak RSS: "+
		"VmHWM after the GETs, the import included. "+
		"The %s GETs ask / of hosts spread over the range, each must answer 200. Start-up: a new process on the same store, "+
		"from its start until /readyz and GET / as %s answer 200. Open files: tollgate's descriptors after the GETs; "+
		"more than %s (one per site) makes the size INVALID.",
		groupThousands(registryBatch), groupThousands(settleRecords), registryWrites, groupThousands(registryProbes), registryHost(0), groupThousands(registryMaxFiles))
	if sc.Note != "" {
		note += " " + sc.Note + "."
	}
	if md {
		fmt.Fprintf(w, "\n%s\n", note)
	} else {
		fmt.Fprintln(w, note)
	}
}
