package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/internal/pebbletest"
	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
)

// The operator files shipped for issue 9, relative to this package.
const (
	dashboardFile = "../../configs/grafana/tollgate.json"
	rulesFile     = "../../configs/prometheus/tollgate.rules.yml"
	runbooksFile  = "../../docs/runbooks.md"
)

// metricName is a metric identifier in a PromQL expression: tollgate's own,
// and the Go and process collectors'. Label values are quoted and never
// start with these prefixes in our files, so they are not mistaken for names.
var metricName = regexp.MustCompile(`\b(?:tollgate|go|process)_[a-zA-Z0-9_]+`)

// TestObservabilityConfigsMatchMetrics runs one node with every subsystem
// that registers metrics (HTTPS with a Pebble CA, Redis, billing with hooks
// and Stripe), serves requests over HTTPS (h2 and HTTP/1.1), scrapes its /metrics,
// and requires every metric the Grafana dashboard and the alert rules use to
// be in that scrape, and every alert to have its annotations and runbook
// section.
func TestObservabilityConfigsMatchMetrics(t *testing.T) {
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	sm := stripetest.Start(t)
	hooks := newHookReceiver(t)
	dir := t.TempDir()
	in := startTollgateFull(t, dir, httpsServer, `redis = "redis://`+rs.Addr()+`/0"`,
		acmeSection(ca, "")+billingConf(hooks.URL, sm.URL()))
	defer in.stop(t)
	in.addSite(t, "obs", "big", in.siteDir(t, "<h1>observed</h1>"), "obs.test")

	// The first HTTPS request gets the certificate on demand; plain HTTP
	// only redirects to HTTPS here.
	for _, proto := range []string{"h2", "http/1.1"} {
		resp, body, err := in.httpsGet(roots, "obs.test", "/", proto)
		if err != nil || resp.StatusCode != 200 || body != "<h1>observed</h1>" {
			t.Fatalf("HTTPS request (%s): %v %q %v\n%s", proto, resp, body, err, in.stderr)
		}
	}
	// The meter's per-kind series appear with the first flush of traffic.
	waitFor(t, func() bool { return in.metric(t, "tollgate_meter_requests_total") >= 2 })

	scraped := scrape(t, "http://"+in.admin+"/metrics")
	// unknown lists (where: name) each metric of exprs missing from the
	// scrape; it logs how many distinct names it checked.
	unknown := func(t *testing.T, exprs map[string][]string) []string {
		var out []string
		checked := map[string]bool{}
		for where, list := range exprs {
			for _, expr := range list {
				for _, name := range metricName.FindAllString(expr, -1) {
					checked[name] = true
					if !scraped[name] {
						out = append(out, where+": "+name)
					}
				}
			}
		}
		t.Logf("%d expressions in %d places use %d distinct metrics", countExprs(exprs), len(exprs), len(checked))
		sort.Strings(out)
		return slices.Compact(out)
	}

	t.Run("dashboard", func(t *testing.T) {
		exprs := dashboardExprs(t, dashboardFile)
		if len(exprs) == 0 {
			t.Fatal("no panel targets found in the dashboard")
		}
		if bad := unknown(t, exprs); len(bad) > 0 {
			t.Errorf("%s uses metrics tollgate does not export:\n  %s", dashboardFile, strings.Join(bad, "\n  "))
		}
	})

	alerts := parseRules(t, rulesFile)
	t.Run("rules", func(t *testing.T) {
		if len(alerts) == 0 {
			t.Fatal("no alerts found in the rules file")
		}
		exprs := map[string][]string{}
		for _, a := range alerts {
			if strings.TrimSpace(a.expr) == "" {
				t.Errorf("alert %s has no expr", a.name)
			}
			exprs["alert "+a.name] = []string{a.expr}
		}
		if bad := unknown(t, exprs); len(bad) > 0 {
			t.Errorf("%s uses metrics tollgate does not export:\n  %s", rulesFile, strings.Join(bad, "\n  "))
		}
	})

	t.Run("runbooks", func(t *testing.T) {
		anchors := runbookAnchors(t, runbooksFile)
		var bad []string
		linked := map[string]bool{}
		for _, a := range alerts {
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if a.annotations[k] == "" {
					bad = append(bad, a.name+": no "+k+" annotation")
				}
			}
			url := a.annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(url, "docs/runbooks.md#")
			switch {
			case url == "":
			case !ok:
				bad = append(bad, a.name+": runbook_url "+url+" is not docs/runbooks.md#<anchor>")
			case !anchors[anchor]:
				bad = append(bad, a.name+": docs/runbooks.md has no section #"+anchor)
			}
			linked[anchor] = true
		}
		for anchor := range anchors {
			if !linked[anchor] {
				bad = append(bad, "docs/runbooks.md#"+anchor+": no alert links this section")
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("alerts and runbooks disagree:\n  %s", strings.Join(bad, "\n  "))
		}
	})
}

func countExprs(exprs map[string][]string) int {
	n := 0
	for _, list := range exprs {
		n += len(list)
	}
	return n
}

// scrape returns the sample names of a Prometheus text exposition (a
// histogram gives name_bucket, name_sum and name_count).
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// dashboardExprs returns the PromQL of every panel target (rows' nested
// panels included) and every templating query, keyed by where it is.
func dashboardExprs(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Query      json.RawMessage `json:"query"`
				Definition string          `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string][]string{}
	hasDatasource := false
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" {
			hasDatasource = true
			continue
		}
		var q struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			json.Unmarshal(v.Query, &q.Query) // a plain string query
		}
		out["variable "+v.Name] = []string{q.Query, v.Definition}
	}
	if !hasDatasource {
		t.Errorf("%s: no datasource template variable", path)
	}
	var walk func([]dashPanel)
	walk = func(panels []dashPanel) {
		for _, p := range panels {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no targets", path, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q target %s has no expr", path, p.Title, tg.RefID)
				}
				out["panel "+p.Title] = append(out["panel "+p.Title], tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	return out
}

type dashPanel struct {
	Type    string      `json:"type"`
	Title   string      `json:"title"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

type alertRule struct {
	name        string
	expr        string
	annotations map[string]string
}

// parseRules reads the alerts of a Prometheus rules file. It is not a YAML
// parser: it understands the regular layout tollgate.rules.yml keeps
// ("- alert: NAME", "expr:" on one line or as a "|" block, and an
// "annotations:" map of one-line values), which is all this file uses.
func parseRules(t *testing.T, path string) []alertRule {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	indent := func(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }
	unquote := func(s string) string {
		s = strings.TrimSpace(s)
		if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
			s = s[1 : len(s)-1]
		}
		return s
	}
	lines := strings.Split(string(b), "\n")
	var alerts []alertRule
	var cur *alertRule
	annIndent := -1 // indent of the current "annotations:" key, -1 outside one
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if annIndent >= 0 && indent(line) <= annIndent {
			annIndent = -1
		}
		switch {
		case strings.HasPrefix(trimmed, "- alert:"):
			alerts = append(alerts, alertRule{name: unquote(strings.TrimPrefix(trimmed, "- alert:")), annotations: map[string]string{}})
			cur = &alerts[len(alerts)-1]
			annIndent = -1
		case strings.HasPrefix(trimmed, "- record:"):
			cur, annIndent = nil, -1 // recording rules carry no annotations
		case cur == nil:
		case annIndent >= 0:
			if k, v, ok := strings.Cut(trimmed, ":"); ok {
				cur.annotations[k] = unquote(v)
			}
		case trimmed == "annotations:":
			annIndent = indent(line)
		case strings.HasPrefix(trimmed, "expr:"):
			v := strings.TrimSpace(strings.TrimPrefix(trimmed, "expr:"))
			if v != "|" && v != ">" && v != "|-" && v != ">-" {
				cur.expr = unquote(v)
				continue
			}
			var block []string
			for base := indent(line); i+1 < len(lines); i++ {
				next := lines[i+1]
				if strings.TrimSpace(next) != "" && indent(next) <= base {
					break
				}
				block = append(block, strings.TrimSpace(next))
			}
			cur.expr = strings.Join(block, "\n")
		}
	}
	return alerts
}

// runbookAnchors returns the GitHub anchors of the second-level headings of
// a Markdown file.
func runbookAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		heading, ok := strings.CutPrefix(line, "## ")
		if !ok {
			continue
		}
		var a strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				a.WriteRune(r)
			case r == ' ':
				a.WriteByte('-')
			}
		}
		anchors[a.String()] = true
	}
	return anchors
}
