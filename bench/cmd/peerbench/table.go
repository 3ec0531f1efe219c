package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// writeTable writes the throughput table (every scenario but memory) as
// Markdown or as aligned text for the terminal.
func writeTable(w io.Writer, rep report, md bool) {
	head := []string{"scenario", "server", "req/s", "p99", "tollgate ÷ server (round range)", "valid"}
	var rows [][]string
	for _, sc := range rep.Scenarios {
		switch {
		case sc.Memory != nil, sc.Idle != nil, sc.Registry != nil, sc.Cluster != nil:
			continue
		case sc.Status == statusNotBuilt:
			rows = append(rows, []string{sc.Title, "—", "not built", "", "", "(" + sc.Note + ")"})
			continue
		}
		for i, row := range sc.Servers {
			title := ""
			if i == 0 {
				title = sc.Title
			}
			ratio := "—"
			if i > 0 {
				ratio = fmtRatio(row.BaseRatio) + fmtSpread(row.BaseRatios)
			}
			valid := "yes"
			if !row.Valid {
				valid = "INVALID"
			}
			n := len(row.Runs)
			if row.Latency != nil {
				n = row.Latency.Samples
			}
			rows = append(rows, []string{title, row.Server, fmtRate(row.ReqPerSec, n),
				fmtP99(row.P99, n), ratio, valid})
		}
		switch {
		case sc.Note == "":
		case md:
			rows = append(rows, []string{"", "", sc.Note, "", "", ""})
		default:
			// In the last column, which tabwriter does not pad: a long
			// note would otherwise widen the req/s column of every row.
			rows = append(rows, []string{"", "", "", "", "", sc.Note})
		}
	}
	writeGrid(w, head, rows, md)
}

// writeMemoryTable writes the RSS figures of the memory scenario.
func writeMemoryTable(w io.Writer, sc scenarioResult, md bool) {
	n := 0
	if len(sc.Memory) > 0 {
		n = sc.Memory[0].Sites
	}
	head := []string{"server", "RSS, 2 sites", "RSS, +" + groupThousands(int64(n)) + " sites", "RSS, after GET / each",
		"tollgate ÷ server (lower is leaner)", "setup", "valid"}
	setup := "setup: tollgate registers the sites through the admin API (one keep-alive connection); nginx and Caddy start with them in their config."
	if sc.ID == "memory-certs" {
		head[2] = "RSS, +" + groupThousands(int64(n)) + " sites with a certificate each"
		head[3] = "RSS, after a TLS handshake + GET / each"
		setup = "setup: tollgate starts with the certificates in its store (as if it had obtained them) and registers the sites " +
			"through the admin API; it loads each certificate at the first handshake for its name. nginx and Caddy start with " +
			"every certificate file in their config. The same " + groupThousands(int64(n)) + " ECDSA P-256 certificates for all three."
	}
	var rows [][]string
	for i, m := range sc.Memory {
		ratio := "—"
		if i > 0 {
			ratio = fmtRatio(m.SitesRatio) + " / " + fmtRatio(m.TouchedRatio)
		}
		valid := "yes"
		if len(m.Problems) > 0 {
			valid = "INVALID"
		}
		rows = append(rows, []string{m.Server, fmtBytes(m.BaseRSS), fmtBytes(m.SitesRSS), fmtBytes(m.TouchedRSS),
			ratio, m.Setup.Round(time.Millisecond).String(), valid})
	}
	writeGrid(w, head, rows, md)
	if sc.Note != "" {
		setup += " " + sc.Note + "."
	}
	if md {
		fmt.Fprintf(w, "\n%s\n", setup)
	} else {
		fmt.Fprintln(w, setup)
	}
}

func writeGrid(w io.Writer, head []string, rows [][]string, md bool) {
	if md {
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
		for _, r := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// printText writes the terminal version of the report.
func printText(w io.Writer, rep report) {
	m := rep.Machine
	fmt.Fprintf(w, "\n%d CPUs, %s, kernel %s; %s\n\n", m.CPUs, m.CPUModel, m.Kernel, m.Pinning)
	writeTable(w, rep, false)
	for _, mem := range memoryScenarios(rep) {
		fmt.Fprintf(w, "\n%s\n", mem.Title)
		writeMemoryTable(w, mem, false)
	}
	for _, sc := range rep.Scenarios {
		if sc.Idle != nil {
			fmt.Fprintf(w, "\n%s\n", sc.Title)
			writeIdleTable(w, sc, false)
		}
	}
	for _, sc := range rep.Scenarios {
		if sc.Registry != nil {
			fmt.Fprintf(w, "\n%s\n", sc.Title)
			writeRegistryTable(w, sc, false)
		}
		if sc.Cluster != nil {
			fmt.Fprintf(w, "\n%s\n", sc.Title)
			writeClusterTable(w, sc, false)
		}
	}
	fmt.Fprintln(w, "\ntargets")
	rows := make([][]string, 0, len(rep.Targets))
	for _, t := range rep.Targets {
		rows = append(rows, []string{t.Target, t.fmtMeasured(), t.Verdict})
	}
	writeGrid(w, []string{"target", "measured", "verdict"}, rows, false)
	if notes := problemNotes(rep); len(notes) > 0 {
		fmt.Fprintln(w, "\nproblems")
		for _, n := range notes {
			fmt.Fprintln(w, "  "+n)
		}
	}
}

func fmtRatio(r *float64) string {
	if r == nil || math.IsNaN(*r) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", *r)
}

// fmtSpread shows the lowest and highest per-round ratio: a wide range says
// the machine was busy and the median deserves less trust.
func fmtSpread(rs []float64) string {
	if len(rs) < 2 {
		return ""
	}
	return fmt.Sprintf(" (%.2f–%.2f)", slices.Min(rs), slices.Max(rs))
}

func fmtRate(v float64, runs int) string {
	if runs == 0 {
		return "n/a"
	}
	return groupThousands(int64(math.Round(v)))
}

func fmtP99(d time.Duration, runs int) string {
	if runs == 0 {
		return "n/a"
	}
	return fmtLatency(d)
}

// fmtBusy is the share of a core cpu over wall, "n/a" when not measured.
func fmtBusy(cpu, wall time.Duration) string {
	if wall <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f %%", 100*float64(cpu)/float64(wall))
}

// fmtLatency prints a latency with three significant digits.
func fmtLatency(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}

func fmtBytes(n int64) string {
	if n <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func groupThousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
