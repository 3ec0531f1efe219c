package main

import (
	"fmt"
	"io"
	"time"
)

// The report of registry-cluster: its targets and its table.

var clusterTargets = []sizedTarget[clusterResult]{
	{"bulk import of 100,000 sites on Redis (one node) < 120 s", 100_000, func(r clusterResult) (string, bool, bool) {
		return fmt.Sprintf("%s (%s sites/s)", fmtLatency(r.Import), groupThousands(int64(r.ImportSitesPerSec))),
			r.Import < 2*time.Minute, r.Import > 0
	}},
	{"a write on node A served by node B at 1,000,000 sites, 100 writes/s: p99 < 100 ms", 1_000_000,
		func(r clusterResult) (string, bool, bool) {
			return fmt.Sprintf("p99 %s (p50 %s, max %s)", fmtLatency(r.PropP99), fmtLatency(r.PropP50), fmtLatency(r.PropMax)),
				r.PropP99 < 100*time.Millisecond, r.Writes > 0
		}},
}

// evaluateClusterTargets judges registry-cluster's sizes against the goals.
func evaluateClusterTargets(results []scenarioResult) []targetResult {
	var rows []clusterResult
	for _, sc := range results {
		if sc.Cluster != nil {
			rows = sc.Cluster
		}
	}
	return judgeSized(clusterTargets, rows, func(r clusterResult) (int, bool) { return r.Sites, r.Valid })
}

// writeClusterTable writes registry-cluster's figures, one row per size.
func writeClusterTable(w io.Writer, sc scenarioResult, md bool) {
	head := []string{"sites", "bulk import into Redis (node A)", "node B start to serving all", "writes on A",
		"served by B after: p50 / p99 / max", "B full loads", "RSS node B", "RSS redis", "valid"}
	var rows [][]string
	for _, r := range sc.Cluster {
		valid := "yes"
		if !r.Valid {
			valid = "INVALID"
		}
		imp := "n/a"
		if r.Import > 0 {
			imp = fmt.Sprintf("%s (%s/s)", fmtLatency(r.Import), groupThousands(int64(r.ImportSitesPerSec)))
		}
		rows = append(rows, []string{groupThousands(int64(r.Sites)), imp, fmtLatency(r.FollowerStart), fmt.Sprint(r.Writes),
			fmtLatency(r.PropP50) + " / " + fmtLatency(r.PropP99) + " / " + fmtLatency(r.PropMax), fmt.Sprint(r.FullLoads),
			fmtBytes(r.FollowerRSS), fmtBytes(r.RedisRSS), valid})
	}
	writeGrid(w, head, rows, md)
	note := fmt.Sprintf("one redis-server (no persistence) and two tollgates on it: node B, measured, alone on the server's core; node A "+
		"and Redis on the load side's core. "+
		"Node A gets the N orgs, sites and domains through POST /v1/import as in registry-scale; node B then starts on the "+
		"registry in Redis, timed until it serves the last site. Then %d writes a second on node A for %s (POST "+
		"/v1/sites/{id}/domains, a new domain each), each timed from A's 201 until B answers GET / as that host with 200 "+
		"(polled every millisecond). B full loads: tollgate_registry_full_loads_total on node B after the writes (0: it "+
		"followed every write through the change log).", clusterWriteRate, clusterWriteFor)
	if sc.Note != "" {
		note += " " + sc.Note + "."
	}
	if md {
		fmt.Fprintf(w, "\n%s\n", note)
	} else {
		fmt.Fprintln(w, note)
	}
}
