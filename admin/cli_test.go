package admin

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
)

// runCLI runs RunCLI with args and returns its exit code and outputs.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = RunCLI(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestCLI runs a session of commands, in order, against one server.
func TestCLI(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	// The address without its scheme exercises the host:port form.
	g := []string{"--addr", strings.TrimPrefix(e.srv.URL, "http://"), "--token", testToken}

	steps := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    []string // substrings of stdout
		wantErr    []string // substrings of stderr
		wantNotOut []string
	}{
		{
			name: "plan put",
			args: []string{"plan", "put", "pro", "--egress-bytes", "1GiB", "--storage-bytes", "16MiB", "--sites", "2",
				"--domains", "2", "--throttle-bps", "128KiB", "--hard-limit-percent", "150", "--grace-period", "72h"},
			wantOut: []string{"NAME", "pro", "1GiB", "16MiB", "128KiB/s", "150%", "72h0m0s"},
		},
		{name: "plan put without limits", args: []string{"plan", "put", "open"}, wantOut: []string{"open", "unlimited", "off", "never", "0s"}},
		{name: "plan list", args: []string{"plan", "list"}, wantOut: []string{"free", "open", "pro"}},
		{name: "plan get", args: []string{"plan", "get", "free"}, wantOut: []string{"free", "1GiB", "16MiB"}},
		{name: "plan get unknown", args: []string{"plan", "get", "gold"}, wantCode: 1, wantErr: []string{`error: Not Found: plan "gold" does not exist`}},
		{name: "plan put bad size", args: []string{"plan", "put", "x", "--egress-bytes", "lots"}, wantCode: 2, wantErr: []string{"lots", "usage: tollgate admin plan put NAME"}},
		{name: "plan put invalid", args: []string{"plan", "put", "x", "--hard-limit-percent", "50"}, wantCode: 1, wantErr: []string{"error: Unprocessable Entity: hard_limit_percent"}},

		{name: "org create", args: []string{"org", "create", "acme", "--name", "Acme", "--plan", "pro"}, wantOut: []string{"acme", "Acme", "pro", "active"}},
		{name: "org create again", args: []string{"org", "create", "acme", "--plan", "pro"}, wantCode: 1, wantErr: []string{`error: Conflict: org "acme" already exists`}},
		{name: "org create flags first", args: []string{"org", "create", "--plan", "free", "beta"}, wantOut: []string{"beta", "free"}},
		{name: "org list", args: []string{"org", "list"}, wantOut: []string{"ID", "acme", "beta"}},
		{name: "org set", args: []string{"org", "set", "beta", "--state", "suspended"}, wantOut: []string{"beta", "suspended"}},
		{name: "org set nothing", args: []string{"org", "set", "beta"}, wantCode: 2, wantErr: []string{"nothing to change"}},
		{name: "org delete", args: []string{"org", "delete", "beta"}, wantOut: []string{"deleted org beta"}},

		{name: "site create dir", args: []string{"site", "create", "acme", "blog", "--dir", "/srv/blog"}, wantOut: []string{"blog", "acme", "dir:/srv/blog"}},
		{name: "site create upstream", args: []string{"site", "create", "acme", "app", "--upstream", "http://127.0.0.1:3000"}, wantOut: []string{"upstream:http://127.0.0.1:3000"}},
		{name: "site create over limit", args: []string{"site", "create", "acme", "third", "--dir", "/srv/x"}, wantCode: 1,
			wantErr: []string{`error: Plan limit reached: sites: plan "pro" allows at most 2 sites`}},
		{name: "site create no source", args: []string{"site", "create", "acme", "x"}, wantCode: 2, wantErr: []string{"--dir PATH or --upstream URL"}},
		{name: "site create two sources", args: []string{"site", "create", "acme", "x", "--dir", "/a", "--upstream", "http://b"}, wantCode: 2, wantErr: []string{"not both"}},

		{name: "domain add", args: []string{"domain", "add", "blog", "Bücher.Example."}, wantOut: []string{"DOMAIN", "xn--bcher-kva.example", "verified"}},
		{name: "domain add taken", args: []string{"domain", "add", "app", "BÜCHER.example"}, wantCode: 1, wantErr: []string{"error: Conflict: domain"}},
		{name: "domain get", args: []string{"domain", "get", "bücher.example"}, wantOut: []string{"xn--bcher-kva.example", "blog"}},
		{name: "site get", args: []string{"site", "get", "blog"}, wantOut: []string{"DOMAINS", "xn--bcher-kva.example"}},
		{name: "org get", args: []string{"org", "get", "acme"}, wantOut: []string{"SITES", "app,blog"}},
		{name: "org delete with sites", args: []string{"org", "delete", "acme"}, wantCode: 1, wantErr: []string{"error: Conflict: ", "still owns 2 site(s)"}},

		{name: "domain delete", args: []string{"domain", "delete", "xn--bcher-kva.example"}, wantOut: []string{"deleted domain"}},
		{name: "site delete", args: []string{"site", "delete", "blog"}, wantOut: []string{"deleted site blog"}},
		{name: "site delete app", args: []string{"site", "delete", "app"}},
		{name: "org delete acme", args: []string{"org", "delete", "acme"}},
		{name: "org get deleted", args: []string{"org", "get", "acme"}, wantCode: 1, wantErr: []string{`error: Not Found: org "acme" does not exist`}},

		{name: "missing argument", args: []string{"plan", "get"}, wantCode: 2, wantErr: []string{"takes 1 argument(s)", "usage: tollgate admin plan get NAME"}},
		{name: "extra argument", args: []string{"plan", "get", "a", "b"}, wantCode: 2, wantErr: []string{"takes 1 argument(s)"}},
		{name: "unknown flag", args: []string{"plan", "list", "--bogus"}, wantCode: 2, wantErr: []string{"bogus"}},
		{name: "command help", args: []string{"plan", "put", "-h"}, wantOut: []string{"-egress-bytes", "-grace-period"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, out, errs := runCLI(append(append([]string{}, g...), st.args...)...)
			if code != st.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, st.wantCode, out, errs)
			}
			for _, w := range st.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range st.wantErr {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
			if st.wantCode == 0 && errs != "" {
				t.Errorf("stderr not empty: %s", errs)
			}
		})
	}
}

func TestCLIJSON(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	t.Setenv(envAddr, e.srv.URL)
	t.Setenv(envToken, testToken)

	code, out, errs := runCLI("--json", "plan", "get", "free")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var p sites.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil || p != sites.FreePlan {
		t.Fatalf("plan get --json: %v %+v\n%s", err, p, out)
	}

	// --json also works after the command.
	code, out, errs = runCLI("plan", "list", "--json")
	var ps []sites.Plan
	if code != 0 || json.Unmarshal([]byte(out), &ps) != nil || len(ps) != 1 || ps[0].Name != "free" {
		t.Fatalf("plan list --json: exit %d %s %s", code, out, errs)
	}

	if code, _, errs = runCLI("org", "create", "acme"); code != 0 {
		t.Fatalf("org create: %s", errs)
	}
	code, out, _ = runCLI("--json", "org", "get", "acme")
	var od OrgDetail
	if code != 0 || json.Unmarshal([]byte(out), &od) != nil || od.ID != "acme" || od.Plan != "free" || od.Sites == nil {
		t.Fatalf("org get --json: exit %d %s", code, out)
	}

	code, out, _ = runCLI("--json", "org", "delete", "acme")
	if code != 0 || out != "" {
		t.Errorf("org delete --json: exit %d, stdout %q, want nothing", code, out)
	}
}

func TestCLIFailures(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	down := httptest.NewServer(nil)
	down.Close()
	t.Setenv(envAddr, "")
	t.Setenv(envToken, "")

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
		wantOut  string
	}{
		{name: "no args", wantCode: 2, wantErr: "usage: tollgate admin"},
		{name: "help", args: []string{"help"}, wantOut: "commands:"},
		{name: "-h", args: []string{"-h"}, wantOut: "plan put NAME"},
		{name: "group only", args: []string{"plan"}, wantCode: 2, wantErr: "missing command"},
		{name: "unknown command", args: []string{"plan", "burn"}, wantCode: 2, wantErr: `unknown command "plan burn"`},
		{name: "unknown global flag", args: []string{"--bogus", "plan", "list"}, wantCode: 2, wantErr: "bogus"},
		{name: "no token", args: []string{"--addr", e.srv.URL, "plan", "list"}, wantCode: 2, wantErr: "no token"},
		{name: "wrong token", args: []string{"--addr", e.srv.URL, "--token", "wrong-token-0123456789", "plan", "list"}, wantCode: 1,
			wantErr: "error: Unauthorized: a valid bearer token is required"},
		{name: "server down", args: []string{"--addr", down.URL, "--token", testToken, "plan", "list"}, wantCode: 1, wantErr: "error: admin client:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCLI(tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errs)
			}
			if !strings.Contains(errs, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, errs)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantOut, out)
			}
		})
	}
}
