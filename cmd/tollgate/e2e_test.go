package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/proctest"
)

// The end-to-end tests drive the built binary on loopback ports chosen by the
// kernel (127.0.0.1:0); the addresses are read from its startup log line.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tollgate-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tollgate")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building tollgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const e2eToken = "e2e-admin-token-0123456789"

type instance struct {
	cmd          *exec.Cmd
	http, admin  string // host:port
	https        string // host:port when [server] https is set
	api          string // host:port when [server] api is set
	stderr       *proctest.Output
	exited       chan error
	configPath   string
	stdoutBuffer *proctest.Output
}

// startTollgate runs the binary with a config whose store lives in dir, and
// waits (polling its log, then /readyz) until it serves.
func startTollgate(t *testing.T, dir string, extraArgs ...string) *instance {
	t.Helper()
	return startTollgateWith(t, dir, "", extraArgs...)
}

// startTollgateWith adds storeExtra (TOML lines) to the [store] section.
func startTollgateWith(t *testing.T, dir, storeExtra string, extraArgs ...string) *instance {
	t.Helper()
	return startTollgateConf(t, dir, storeExtra, "", extraArgs...)
}

// startTollgateConf also appends tail (whole TOML sections) to the config.
func startTollgateConf(t *testing.T, dir, storeExtra, tail string, extraArgs ...string) *instance {
	t.Helper()
	return startTollgateFull(t, dir, "", storeExtra, tail, extraArgs...)
}

// startTollgateFull also adds serverExtra (TOML lines) to [server].
func startTollgateFull(t *testing.T, dir, serverExtra, storeExtra, tail string, extraArgs ...string) *instance {
	t.Helper()
	if !strings.Contains(serverExtra, "http =") {
		serverExtra = `http = "127.0.0.1:0"` + "\n" + serverExtra
	}
	cfg := fmt.Sprintf(`[server]
admin = "127.0.0.1:0"
admin_token = "env:E2E_TOKEN"
shutdown_timeout = "10s"
%s
[log]
format = "json"
[store]
path = %q
%s
[proxy]
upstream_timeout = "2s"
%s
`, serverExtra, filepath.Join(dir, "tollgate.db"), storeExtra, tail)
	cfgPath := filepath.Join(dir, "tollgate.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, append([]string{"serve", "--config", cfgPath}, extraArgs...)...)
	cmd.Env = append(os.Environ(), "E2E_TOKEN="+e2eToken, "TOLLGATE_ADMIN_TOKEN=")
	proctest.DieWithTests(cmd)
	pr, pw := io.Pipe()
	inst := &instance{cmd: cmd, stderr: &proctest.Output{}, exited: make(chan error, 1), configPath: cfgPath, stdoutBuffer: &proctest.Output{}}
	cmd.Stderr = io.MultiWriter(pw, inst.stderr)
	cmd.Stdout = inst.stdoutBuffer
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { inst.exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-inst.exited
		}
	})
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line struct{ Msg, HTTP, HTTPS, Admin, API string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "tollgate started" {
				inst.http, inst.https, inst.admin, inst.api = line.HTTP, line.HTTPS, line.Admin, line.API
				close(started)
				break
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case <-started:
	case err := <-inst.exited:
		t.Fatalf("tollgate exited before starting: %v\n%s", err, inst.stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("tollgate did not start within 20s:\n%s", inst.stderr)
	}
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + inst.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return inst
}

// stop sends SIGTERM and requires a clean exit.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-in.exited:
		if err != nil {
			t.Fatalf("tollgate exited with %v after SIGTERM:\n%s", err, in.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("tollgate did not stop within 30s of SIGTERM:\n%s", in.stderr)
	}
}

// rss is the resident set of the instance's process in bytes (Linux /proc).
func (in *instance) rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", in.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// readyz returns /readyz's status and body.
func (in *instance) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + in.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
}

// cli runs `tollgate admin ...` against the instance.
func (in *instance) cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"admin", "--addr", in.admin}, args...)...)
	cmd.Env = append(os.Environ(), "TOLLGATE_ADMIN_TOKEN="+e2eToken)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func (in *instance) get(t *testing.T, host, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+in.http+path, nil)
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	siteDir := filepath.Join(dir, "site")
	os.MkdirAll(siteDir, 0o755)
	os.WriteFile(filepath.Join(siteDir, "index.html"), []byte("<h1>e2e home</h1>"), 0o644)
	os.WriteFile(filepath.Join(siteDir, "about.html"), []byte("<h1>e2e about</h1>"), 0o644)

	release, arrived := make(chan struct{}), make(chan struct{}, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		fmt.Fprintf(w, "upstream saw host=%s xff=%s path=%s", r.Host, r.Header.Get("X-Forwarded-For"), r.URL.RequestURI())
	}))
	defer upstream.Close()
	defer close(release)
	closedPort := httptest.NewServer(http.NotFoundHandler())
	deadURL := closedPort.URL
	closedPort.Close()

	in := startTollgate(t, dir)

	// Registry through the CLI.
	steps := [][]string{
		{"plan", "put", "pro", "--sites", "3", "--domains", "3", "--egress-bytes", "100GiB"},
		{"org", "create", "acme", "--name", "Acme", "--plan", "pro"},
		{"site", "create", "acme", "www", "--dir", siteDir},
		{"site", "create", "acme", "app", "--upstream", upstream.URL},
		{"site", "create", "acme", "dead", "--upstream", deadURL},
		{"domain", "add", "www", "WWW.Acme.Example."},
		{"domain", "add", "app", "app.acme.example"},
		{"domain", "add", "dead", "dead.acme.example"},
	}
	for _, s := range steps {
		if out, code := in.cli(t, s...); code != 0 {
			t.Fatalf("tollgate admin %v: exit %d\n%s", s, code, out)
		}
	}
	if out, code := in.cli(t, "domain", "add", "app", "www.acme.example"); code != 1 || !strings.Contains(out, "409") && !strings.Contains(strings.ToLower(out), "conflict") && !strings.Contains(out, "already") {
		t.Fatalf("duplicate domain: exit %d, %s", code, out)
	}
	if out, code := in.cli(t, "site", "create", "acme", "fourth", "--dir", siteDir); code != 1 || !strings.Contains(out, "sites") {
		t.Fatalf("site over plan limit: exit %d, %s", code, out)
	}
	if out, code := in.cli(t, "org", "create", "x", "--plan", "nope"); code != 1 {
		t.Fatalf("unknown plan: exit %d, %s", code, out)
	}

	check := func(t *testing.T) {
		tests := []struct {
			host, path string
			status     int
			body       string
		}{
			{"www.acme.example", "/", 200, "e2e home"},
			{"www.acme.example:8080", "/about", 200, "e2e about"},
			{"app.acme.example", "/x?y=1", 200, "upstream saw host=app.acme.example xff=127.0.0.1 path=/x?y=1"},
			{"dead.acme.example", "/", 502, "502"},
			{"unknown.example", "/", 404, "tollgate"},
		}
		for _, tt := range tests {
			resp, body := in.get(t, tt.host, tt.path)
			if resp.StatusCode != tt.status || !strings.Contains(body, tt.body) {
				t.Errorf("GET %s%s = %d %.120q; want %d containing %q", tt.host, tt.path, resp.StatusCode, body, tt.status, tt.body)
			}
		}
	}
	check(t)

	// Admin API: auth and problems.
	req, _ := http.NewRequest("GET", "http://"+in.admin+"/v1/orgs", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 401 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("no token: %v %v", resp, err)
	}
	resp.Body.Close()
	// The admin API is not on the public listener.
	if resp, _ := in.get(t, "www.acme.example", "/v1/orgs"); resp.StatusCode != 404 {
		t.Fatalf("admin route on the public listener: %d", resp.StatusCode)
	}
	metrics, err := http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	for _, want := range []string{`tollgate_http_requests_total{class="2xx",kind="dir"}`, `tollgate_upstream_errors_total{reason="unavailable"} 1`, "tollgate_cache_hits_total", "tollgate_admin_requests_total", "tollgate_build_info"} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// SIGTERM while a request is in flight: it completes, then the process exits 0.
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+in.http+"/slow", nil)
		req.Host = "app.acme.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-arrived // the slow request is at the upstream, in flight through tollgate
	in.cmd.Process.Signal(syscall.SIGTERM)
	release <- struct{}{}
	if code := <-done; code != 200 {
		t.Fatalf("in-flight request during shutdown: status %d", code)
	}
	select {
	case err := <-in.exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, in.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}

	// Restart on the same store: the registry is intact.
	in = startTollgate(t, dir)
	check(t)
	if out, code := in.cli(t, "--json", "org", "get", "acme"); code != 0 || !strings.Contains(out, `"plan": "pro"`) && !strings.Contains(out, `"plan":"pro"`) {
		t.Fatalf("org after restart: exit %d %s", code, out)
	}
	in.stop(t)
}

func TestServeRejectsBadConfig(t *testing.T) {
	p := writeConfig(t, "[server]\nhttp = \"x\"\nadmin_token = \"short\"\n[limits]\nmax_header_bytes = 1\n")
	out, err := exec.Command(binary, "serve", "--config", p).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("serve with a bad config: %v", err)
	}
	for _, key := range []string{"server.http", "server.admin_token", "limits.max_header_bytes"} {
		if !strings.Contains(string(out), key) {
			t.Errorf("output does not name %s:\n%s", key, out)
		}
	}
	if out, err := exec.Command(binary, "check-config", p).CombinedOutput(); err == nil || !strings.Contains(string(out), "server.http") {
		t.Fatalf("check-config: %v %s", err, out)
	}
	out, err = exec.Command(binary, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "tollgate ") {
		t.Fatalf("version: %v %s", err, out)
	}
}

func TestDemoSeed(t *testing.T) {
	dir := t.TempDir()
	site := filepath.Join(dir, "site")
	os.MkdirAll(site, 0o755)
	os.WriteFile(filepath.Join(site, "index.html"), []byte("demo!"), 0o644)
	for range 2 { // idempotent across restarts
		in := startTollgate(t, dir, "--demo", site)
		if resp, body := in.get(t, "demo.localhost", "/"); resp.StatusCode != 200 || body != "demo!" {
			t.Fatalf("demo site: %d %q", resp.StatusCode, body)
		}
		// stdout and stderr are two pipes: the URL, printed before the
		// "tollgate started" line the instance waited for, may be copied
		// after it.
		waitFor(t, func() bool { return strings.Contains(in.stdoutBuffer.String(), "http://demo.localhost:") })
		in.stop(t)
	}
}

// registerSite creates org acme (free plan), its dir site www serving dir and
// the domain www.acme.example, through the CLI.
func (in *instance) registerSite(t *testing.T, dir string) {
	t.Helper()
	in.addSite(t, "acme", "free", dir, "www.acme.example")
}

// siteDir makes a site directory whose index.html says body.
func (in *instance) siteDir(t *testing.T, body string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "site")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "index.html"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// addSite creates org on plan, its dir site "www" serving dir, and attaches
// domains, through the CLI.
func (in *instance) addSite(t *testing.T, org, plan, dir string, domains ...string) {
	t.Helper()
	steps := [][]string{{"org", "create", org, "--plan", plan}, {"site", "create", org, "www", "--dir", dir}}
	for _, d := range domains {
		steps = append(steps, []string{"domain", "add", "www", d})
	}
	for _, s := range steps {
		if out, code := in.cli(t, s...); code != 0 {
			t.Fatalf("%v: %s", s, out)
		}
	}
}
