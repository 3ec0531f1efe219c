package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/internal/giteatest"
)

// TestPublishOverStorageQuota runs the built binary against a real Gitea: a
// push whose tree would take the org over its plan's storage_bytes is not
// published (the last published commit is served byte for byte), the
// refusal is an org event, a quota.storage_exceeded hook and publish_blocked
// on GET /v1/sites/{id}; a restart on the same store keeps all of it (the
// refused head is asked again, not published as a first publish, and not
// recorded twice); a push back under the quota is published and clears it,
// for good across the next restart.
func TestPublishOverStorageQuota(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "site")
	gs.PutFile(t, "alice", "site", "main", "index.html", []byte("<p>v1</p>"))
	gs.WaitRaw(t, "alice", "site", "main", "index.html")

	hooks := newHookReceiver(t)
	const secret = "hook-secret-0123456789"
	t.Setenv("E2E_GITEA_TOKEN", gs.Token())
	dir := t.TempDir()
	conf := fmt.Sprintf(`[sites]
gitea_url = %q
gitea_token = "env:E2E_GITEA_TOKEN"
gitea_webhook_secret = %q
revalidate = "1h"
gitea_timeout = "3s"
[meter]
flush_interval = "100ms"
[billing]
enforce_interval = "100ms"
[[billing.plans]]
name = "tiny"
storage_bytes = 20000
[[billing.hooks]]
url = %q
secret = %q
`, gs.URL(), secret, hooks.URL, e2eHookSecret)
	in := startTollgateConf(t, dir, "", conf)
	defer func() { in.stop(t) }() // the instance running at the end
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/orgs", `{"id":"acme","plan":"tiny"}`},
		{"POST", "/v1/orgs/acme/sites", `{"id":"alicesite","source":{"type":"gitea","owner":"alice","repo":"site","branch":"main"}}`},
		{"POST", "/v1/sites/alicesite/domains", `{"domain":"site.example"}`},
	} {
		if code, body := in.adminCall(t, c.method, c.path, c.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, body)
		}
	}
	serves := func(path string, status int, body string) bool {
		resp, b := in.get(t, "site.example", path)
		return resp.StatusCode == status && (body == "" || b == body)
	}
	if !serves("/", 200, "<p>v1</p>") {
		t.Fatal("the first commit is not served")
	}
	waitFor(t, func() bool { // measured: the org stores the first commit
		_, body := in.adminCall(t, "GET", "/v1/orgs/acme", "")
		return !strings.Contains(body, `"storage_bytes":0`)
	})

	// Over the quota: big.bin, then index.html, with the webhook. Gitea
	// handles pushes from a queue: the big.bin push may reach the webhook
	// added after it, and that head is refused too.
	withBig := gs.PutFile(t, "alice", "site", "main", "big.bin", []byte(strings.Repeat("x", 30_000)))
	gs.AddWebhook(t, "alice", "site", "http://"+in.admin+"/hooks/gitea", secret)
	refused := gs.PutFile(t, "alice", "site", "main", "index.html", []byte("<p>v2</p>"))
	var site struct {
		PublishBlocked *struct{ Commit, Reason, At string } `json:"publish_blocked"`
	}
	readSite := func() {
		t.Helper()
		site.PublishBlocked = nil
		code, body := in.adminCall(t, "GET", "/v1/sites/alicesite", "")
		if err := json.Unmarshal([]byte(body), &site); code != 200 || err != nil {
			t.Fatalf("GET /v1/sites/alicesite: %d %s %v", code, body, err)
		}
	}
	waitFor(t, func() bool {
		readSite()
		return site.PublishBlocked != nil && (site.PublishBlocked.Commit == refused || site.PublishBlocked.Commit == withBig)
	})
	if b := site.PublishBlocked; !strings.Contains(b.Reason, "over the 20000 of plan tiny") || b.At == "" {
		t.Fatalf("publish_blocked %+v", b)
	}
	if !serves("/", 200, "<p>v1</p>") || !serves("/big.bin", 404, "") {
		t.Fatal("the refused commit is served")
	}
	hooks.waitFor(t, "quota.storage_exceeded")
	_, events := in.adminCall(t, "GET", "/v1/orgs/acme/events", "")
	if !strings.Contains(events, `"field":"publish"`) || !strings.Contains(events, `"to":"`+site.PublishBlocked.Commit+`"`) ||
		!strings.Contains(events, `"actor":"billing"`) {
		t.Fatalf("org events: %s", events)
	}

	// Restarted on the same store once the head is refused: publish_blocked
	// is shown before the repository is looked up again, the published
	// commit is served byte for byte, the head is refused again without a
	// second event. The webhook follows the new admin address.
	waitFor(t, func() bool { readSite(); return site.PublishBlocked != nil && site.PublishBlocked.Commit == refused })
	blocked := *site.PublishBlocked
	_, events = in.adminCall(t, "GET", "/v1/orgs/acme/events", "")
	before := strings.Count(events, `"field":"publish"`)
	in.stop(t)
	in = startTollgateConf(t, dir, "", conf)
	readSite()
	if site.PublishBlocked == nil || *site.PublishBlocked != blocked {
		t.Fatalf("publish_blocked after a restart: %+v; want %+v", site.PublishBlocked, blocked)
	}
	if !serves("/", 200, "<p>v1</p>") || !serves("/big.bin", 404, "") {
		t.Fatal("the refused commit is served after a restart")
	}
	readSite()
	_, events = in.adminCall(t, "GET", "/v1/orgs/acme/events", "")
	if site.PublishBlocked == nil || *site.PublishBlocked != blocked || strings.Count(events, `"field":"publish"`) != before {
		t.Fatalf("after the head was asked again: publish_blocked %+v, events %s", site.PublishBlocked, events)
	}
	gs.AddWebhook(t, "alice", "site", "http://"+in.admin+"/hooks/gitea", secret)

	// Back under the quota: published at once, the block cleared.
	gs.DeleteFile(t, "alice", "site", "main", "big.bin")
	waitFor(t, func() bool { return serves("/", 200, "<p>v2</p>") })
	readSite()
	if site.PublishBlocked != nil {
		t.Fatalf("publish_blocked after a publish: %+v", site.PublishBlocked)
	}
	// One event and one hook per refused commit.
	_, events = in.adminCall(t, "GET", "/v1/orgs/acme/events", "")
	n := strings.Count(events, `"field":"publish"`)
	if n < 1 || n > 2 {
		t.Fatalf("%d publish events; want 1 or 2 (the heads refused): %s", n, events)
	}
	waitFor(t, func() bool { return hooks.count("quota.storage_exceeded") >= n })
	if got := hooks.count("quota.storage_exceeded"); got != n {
		t.Fatalf("%d quota.storage_exceeded hooks for %d refused commits", got, n)
	}

	// Nothing refused is left on disk: the next start serves the head.
	in.stop(t)
	in = startTollgateConf(t, dir, "", conf)
	readSite()
	if site.PublishBlocked != nil || !serves("/", 200, "<p>v2</p>") {
		t.Fatalf("after a publish and a restart: publish_blocked %+v, or v2 not served", site.PublishBlocked)
	}
}
