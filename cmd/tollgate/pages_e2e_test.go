package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/dnstest"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
)

// TestPagesFromGitea serves sites straight from a real Gitea through the
// built binary: the URL scheme, the synthetic org, a push made visible by the
// webhook, and Gitea going down.
func TestPagesFromGitea(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "pages")
	gs.PutFile(t, "alice", "pages", "main", "index.html", []byte("<h1>alice home</h1>"))
	gs.PutFile(t, "alice", "pages", "main", "404.html", []byte("alice's own 404"))
	gs.PutFile(t, "alice", "pages", "main", "_redirects", []byte("/old /new-place 302\n/spa/* /index.html 200\n/bad line here too\n"))
	gs.CreateRepo(t, "alice", "blog")
	gs.PutFile(t, "alice", "blog", "main", "index.html", []byte("blog on main"))
	gs.CreateBranch(t, "alice", "blog", "pages", "main")
	gs.PutFile(t, "alice", "blog", "pages", "index.html", []byte("blog v1"))
	gs.PutFile(t, "alice", "blog", "pages", ".domains", []byte("# custom domains\nBlog.Alice.Example\nunproven.example\nnot a domain\n"))
	dns := dnstest.Start(t)
	dns.SetCNAME("blog.alice.example", "blog.alice.pages.test")
	gs.WaitRaw(t, "alice", "pages", "main", "index.html")
	gs.WaitRaw(t, "alice", "blog", "pages", "index.html")

	dir := t.TempDir()
	const secret = "hook-secret-0123456789"
	t.Setenv("E2E_GITEA_TOKEN", gs.Token())
	in := startTollgateConf(t, dir, "", fmt.Sprintf(`[sites]
pages_domain = "pages.test"
gitea_url = %q
gitea_token = "env:E2E_GITEA_TOKEN"
gitea_webhook_secret = %q
revalidate = "1h"
gitea_timeout = "3s"
dns_resolver = %q
`, gs.URL(), secret, dns.Addr()))
	defer in.stop(t)

	tests := []struct {
		host, path string
		status     int
		body       string
		location   string
	}{
		{"alice.pages.test", "/", 200, "alice home", ""},
		{"Alice.Pages.Test:8080", "/", 200, "alice home", ""},
		{"alice.pages.test", "/blog", 301, "", "/blog/"},
		{"alice.pages.test", "/blog/", 200, "blog v1", ""},
		{"alice.pages.test", "/blog/@main/", 200, "blog on main", ""},
		{"alice.pages.test", "/blog/@no-such-branch/", 404, "", ""},
		{"alice.pages.test", "/blog/@bad..branch/", 404, "", ""},
		{"alice.pages.test", "/nothing-here", 404, "alice's own 404", ""},
		{"alice.pages.test", "/../etc/passwd", 404, "", ""},
		{"alice.pages.test", "/old", 302, "", "/new-place"},
		{"alice.pages.test", "/spa/settings/x", 200, "alice home", ""},
		{"nobody.pages.test", "/", 404, "", ""},
		{"a.b.pages.test", "/", 404, "", ""},
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", "http://"+in.http+tt.path, nil)
		req.Host = tt.host
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.body) || resp.Header.Get("Location") != tt.location {
			t.Errorf("GET %s%s = %d %q (Location %q); want %d %q %q", tt.host, tt.path, resp.StatusCode, b, resp.Header.Get("Location"), tt.status, tt.body, tt.location)
		}
	}

	// Alice's usage has an org from the first request; the org appears in the registry.
	waitFor(t, func() bool {
		out, code := in.cli(t, "--json", "org", "get", "gitea-alice")
		return code == 0 && strings.Contains(out, `"plan": "free"`)
	})
	// Unknown owners create nothing (checked after alice's org, created in
	// the background the same way, exists).
	if out, code := in.cli(t, "org", "get", "gitea-nobody"); code == 0 {
		t.Fatalf("an org was created for an unknown owner: %s", out)
	}

	// A custom domain declared in .domains and proven by its CNAME serves
	// the repository; an unproven one does not.
	waitFor(t, func() bool {
		resp, body := in.get(t, "blog.alice.example", "/")
		return resp.StatusCode == 200 && body == "blog v1"
	})
	if out, code := in.cli(t, "--json", "domain", "get", "blog.alice.example"); code != 0 || !strings.Contains(out, "dns-cname") || !strings.Contains(out, "gitea-alice-blog") {
		t.Fatalf("declared domain in the registry: %d %s", code, out)
	}
	if resp, _ := in.get(t, "unproven.example", "/"); resp.StatusCode != 404 {
		t.Fatalf("unproven domain: %d", resp.StatusCode)
	}

	// A gitea site created by an operator, on a custom domain; and an
	// operator who attributes alice's pages to a team org.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/orgs", `{"id":"team","plan":"free"}`},
		{"POST", "/v1/orgs/team/sites", `{"id":"teamblog","source":{"type":"gitea","owner":"alice","repo":"blog","branch":"main"}}`},
		{"POST", "/v1/sites/teamblog/domains", `{"domain":"team.example"}`},
		{"PATCH", "/v1/orgs/team", `{"gitea_owners":["alice"]}`},
	} {
		req, _ := http.NewRequest(c.method, "http://"+in.admin+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+e2eToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode >= 300 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s %s: %v %s", c.method, c.path, err, b)
		}
		resp.Body.Close()
	}
	if resp, body := in.get(t, "team.example", "/"); resp.StatusCode != 200 || body != "blog on main" {
		t.Fatalf("operator's gitea site: %d %q", resp.StatusCode, body)
	}
	_, before := in.usageTotals(t, "team")
	in.get(t, "alice.pages.test", "/")
	waitFor(t, func() bool {
		_, after := in.usageTotals(t, "team")
		return after >= before+1 // alice's pages now bill the team
	})

	// Storage: the tree of the served commits, reported on the org.
	waitFor(t, func() bool {
		out, code := in.cli(t, "--json", "org", "get", "gitea-alice")
		return code == 0 && !strings.Contains(out, `"storage_bytes": 0`) && strings.Contains(out, `"storage_bytes"`)
	})

	// A push with the webhook: served within a second.
	gs.AddWebhook(t, "alice", "blog", "http://"+in.admin+"/hooks/gitea", secret)
	gs.PutFile(t, "alice", "blog", "pages", "index.html", []byte("blog v2"))
	pushed := time.Now()
	waitFor(t, func() bool {
		resp, body := in.get(t, "alice.pages.test", "/blog/")
		return resp.StatusCode == 200 && body == "blog v2"
	})
	if d := time.Since(pushed); d > 2*time.Second {
		t.Errorf("the push took %v to be served", d)
	}
	// A forged webhook is refused.
	req, _ := http.NewRequest("POST", "http://"+in.admin+"/hooks/gitea", strings.NewReader(`{"ref":"refs/heads/pages"}`))
	req.Header.Set("X-Gitea-Signature", "00")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("forged webhook: %v %v", resp, err)
	}

	// Gitea down: cached pages still 200, uncached ones 502 within the timeout.
	gs.Stop()
	if resp, body := in.get(t, "alice.pages.test", "/"); resp.StatusCode != 200 || !strings.Contains(body, "alice home") {
		t.Fatalf("cached page with Gitea down: %d %q", resp.StatusCode, body)
	}
	start := time.Now()
	if resp, _ := in.get(t, "alice.pages.test", "/never-fetched.html"); resp.StatusCode != 502 {
		t.Fatalf("uncached page with Gitea down: %d; want 502", resp.StatusCode)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("502 took %v; want within gitea_timeout (3s)", d)
	}

	// The bytes served were metered to alice's org.
	waitFor(t, func() bool {
		egress, requests := in.usageTotals(t, "gitea-alice")
		return egress > 0 && requests >= 8
	})
}
