package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigErrorPages: a broken template in [proxy] error_pages
// fails check-config and serve, each naming the file; a sound directory
// passes.
func TestCheckConfigErrorPages(t *testing.T) {
	for _, tc := range []struct {
		name, file, text, want string
	}{
		{"parse error", "402.html", "<p>{{.Status</p>", "402.html:1: "},
		{"execution error", "default.html", "<p>{{.Plan}}</p>", "can't evaluate field Plan"},
		{"no page's name", "4O4.html", "<p>typo</p>", "not a page's name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must := func(err error) {
				if err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			must(os.WriteFile(filepath.Join(dir, "429.html"), []byte("<p>{{.Text}}</p>"), 0o644))
			must(os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.text), 0o644))
			p := writeConfig(t, "[server]\nadmin_token = \"0123456789abcdef0123\"\n[store]\npath = \""+
				filepath.Join(t.TempDir(), "t.db")+"\"\n[proxy]\nerror_pages = \""+dir+"\"\n")
			path := filepath.Join(dir, tc.file)
			for _, args := range [][]string{{"check-config", p}, {"serve", "--config", p}} {
				out, err := exec.Command(binary, args...).CombinedOutput()
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
					t.Fatalf("%s: %v, want exit 1:\n%s", args[0], err, out)
				}
				if !strings.Contains(string(out), "proxy.error_pages: "+path+": ") || !strings.Contains(string(out), tc.want) {
					t.Errorf("%s: output does not name %s with %q:\n%s", args[0], path, tc.want, out)
				}
			}
			must(os.Remove(path))
			if out, err := exec.Command(binary, "check-config", p).CombinedOutput(); err != nil {
				t.Errorf("check-config without the broken file: %v\n%s", err, out)
			}
		})
	}
}

// TestErrorPagesServed: the built binary answers an expired org's site with
// the operator's 402 page, linking to the org's renewal URL.
func TestErrorPagesServed(t *testing.T) {
	pages := t.TempDir()
	if err := os.WriteFile(filepath.Join(pages, "402.html"),
		[]byte(`<!doctype html><h1>Example Hosting</h1><p>{{.Text}}</p><a href="{{.RenewalURL}}">Renew</a>`), 0o644); err != nil {
		t.Fatal(err)
	}
	in := startTollgateConf(t, t.TempDir(), "", "error_pages = \""+pages+"\"\n[billing]\nrenewal_url = \"https://console.example/orgs/{org}/billing\"\n")
	steps := [][]string{{"org", "create", "acme", "--plan", "free", "--state", "expired"},
		{"site", "create", "acme", "www", "--dir", in.siteDir(t, "<h1>home</h1>")}, {"domain", "add", "www", "www.acme.example"}}
	for _, s := range steps {
		if out, code := in.cli(t, s...); code != 0 {
			t.Fatalf("%v: %s", s, out)
		}
	}
	var body string
	waitFor(t, func() bool {
		res, b := in.get(t, "www.acme.example", "/")
		body = b
		return res.StatusCode == 402 && res.Header.Get("Tollgate-Reason") == "PAYMENT_REQUIRED"
	})
	for _, want := range []string{"<h1>Example Hosting</h1>", "<p>This site is paused", `<a href="https://console.example/orgs/acme/billing">Renew</a>`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	in.stop(t)
}
