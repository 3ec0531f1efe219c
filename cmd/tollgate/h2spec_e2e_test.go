package main

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// h2spec is the HTTP/2 conformance suite (github.com/summerwind/h2spec
// v2.2.1, 145 cases in its default, non-strict run). Caddy 2.6.2 passes
// 141 of them, nginx 1.22 118; tollgate all 145.
const (
	h2specCases   = 145
	h2specMinPass = 145
	// h2specEnvBinary names an environment variable that, when set, is the
	// path of the h2spec binary to run.
	h2specEnvBinary = "H2SPEC_BIN"
)

// TestH2Spec runs h2spec against the built binary's TLS listener (a
// certificate from Pebble, h2 through ALPN) and requires all 145 of its
// cases to pass, among them every case of h2specMustPass: a
// request with a connection-specific header field, or with TE other than
// "trailers", is answered with RST_STREAM PROTOCOL_ERROR (8.1.2.2).
//
// h2spec has no SNI option: it sends its -h name as SNI and connects to
// that name, so it runs in a private mount namespace whose /etc/hosts maps
// the site's name to 127.0.0.1 (unshare -m, as root; the machine's
// /etc/hosts is untouched).
func TestH2Spec(t *testing.T) {
	bin := h2specTool(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is needed to give h2spec a private /etc/hosts: %v", err)
	}
	const host = "h2spec.test"
	in, roots := startHTTPS(t, "")
	defer in.stop(t)
	dir := t.TempDir()
	if out, code := in.cli(t, "plan", "put", "big"); code != 0 {
		t.Fatal(out)
	}
	// Some cases need a response body of a few bytes at least (flow control
	// with a window of 1).
	in.addSite(t, "spec", "big", in.siteDir(t, "<h1>"+strings.Repeat("h2spec ", 64)+"</h1>"), host)
	// The certificate is issued before h2spec starts: its cases wait 2 s.
	if resp, _, err := in.httpsGet(roots, host, "/", "h2"); err != nil || resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" {
		t.Fatalf("h2 request before h2spec: %v %v\n%s", resp, err, in.stderr)
	}

	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 "+host+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "h2spec.xml")
	_, port, _ := net.SplitHostPort(in.https)
	cmd := exec.Command(unshare, "-m", "sh", "-c", `mount --bind "$1" /etc/hosts && shift && exec "$@"`,
		"sh", hosts, bin, "-t", "-k", "-h", host, "-p", port, "-j", report)
	start := time.Now()
	out, runErr := cmd.CombinedOutput()
	t.Logf("h2spec took %v", time.Since(start))
	// h2spec exits 1 when any case fails; the report decides.
	var exit *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exit) {
		t.Fatalf("running h2spec: %v\n%s", runErr, out)
	}
	sum, err := readH2specReport(report)
	if err != nil {
		t.Fatalf("h2spec report: %v (exit %v)\n%s", err, runErr, out)
	}
	t.Logf("h2spec: %d cases, %d passed; failed: %v", sum.cases, sum.passed, sum.failed)
	if sum.cases != h2specCases {
		t.Fatalf("h2spec ran %d cases, want %d\n%s", sum.cases, h2specCases, out)
	}
	if sum.passed < h2specMinPass {
		t.Errorf("h2spec: %d of %d cases pass, want at least %d\n%s", sum.passed, sum.cases, h2specMinPass, out)
	}
	for section, n := range h2specMustPass {
		if sum.bySection[section] != n {
			t.Errorf("h2spec section %s ran %d cases, want %d", section, sum.bySection[section], n)
		}
	}
	var mustHavePassed []string
	for _, f := range sum.failed {
		if section, _, _ := strings.Cut(f, " "); h2specMustPass[section] > 0 {
			mustHavePassed = append(mustHavePassed, f)
		}
	}
	if len(mustHavePassed) > 0 {
		t.Errorf("h2spec cases failed: %q\n%s", mustHavePassed, out)
	}
}

// h2specMustPass are the sections (and their number of cases) whose every
// case must pass: HTTP/2 8.1.2.2, connection-specific header fields (see
// proxy/h2_strict.go), and HTTP/2 4.2, frame size (SETTINGS_MAX_FRAME_SIZE
// is 16 KiB, and a larger frame a connection error).
var h2specMustPass = map[string]int{"http2/8.1.2.2": 2, "http2/4.2": 3}

// h2specTool is h2specBinary for a test: it fails t when h2spec is missing,
// and skips t under go test -short, the hermetic inner loop.
func h2specTool(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs h2spec; -short")
	}
	bin, err := h2specBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// h2specBinary finds h2spec: the path in $H2SPEC_BIN, else
// ~/.cache/tollgate/bin/h2spec (where make h2spec installs it), else h2spec
// on PATH, else ~/go/bin/h2spec (go install's default). A missing binary is
// an error: h2spec is a declared dependency of the tests.
func h2specBinary() (string, error) {
	if p := os.Getenv(h2specEnvBinary); p != "" {
		if !isExecutable(p) {
			return "", fmt.Errorf("%s=%q is not an executable file", h2specEnvBinary, p)
		}
		return p, nil
	}
	home, _ := os.UserHomeDir()
	if home != "" {
		if p := filepath.Join(home, ".cache", "tollgate", "bin", "h2spec"); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p, nil
	}
	if home != "" {
		if p := filepath.Join(home, "go", "bin", "h2spec"); isExecutable(p) {
			return p, nil
		}
	}
	return "", errors.New("h2spec not found: run `make h2spec` (or set " + h2specEnvBinary + ")")
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// h2specSummary is what an h2spec JUnit report says.
type h2specSummary struct {
	cases, passed int
	bySection     map[string]int // cases run per section ("http2/8.1.2.2")
	failed        []string       // "section description" of each case that failed or erred
}

// readH2specReport reads h2spec's JUnit report (-j): one testsuite per
// section (package = spec/section, "http2/8.1.2.2", "hpack/4.2"), one
// testcase per case, with a failure or error element when it did not pass.
func readH2specReport(path string) (h2specSummary, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return h2specSummary{}, err
	}
	var r struct {
		Suites []struct {
			ID    string `xml:"package,attr"`
			Cases []struct {
				Desc    string    `xml:"classname,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &r); err != nil {
		return h2specSummary{}, err
	}
	s := h2specSummary{bySection: map[string]int{}}
	for _, suite := range r.Suites {
		for _, c := range suite.Cases {
			s.cases++
			s.bySection[suite.ID]++
			switch {
			case c.Failure != nil || c.Error != nil:
				s.failed = append(s.failed, suite.ID+" "+c.Desc)
			case c.Skipped == nil:
				s.passed++
			}
		}
	}
	if s.cases == 0 {
		return s, errors.New("no test cases in the report")
	}
	return s, nil
}
