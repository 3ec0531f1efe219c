package giteatest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

func TestGiteaLifecycle(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	s := Start(t)
	t.Logf("Start took %s", time.Since(begin).Round(time.Millisecond))

	s.CreateUser(t, "alice")
	s.CreateRepo(t, "alice", "site")
	s.CreateBranch(t, "alice", "site", "pages", "main")
	const page = "<h1>hello</h1>\n"
	if sha := s.PutFile(t, "alice", "site", "pages", "index.html", []byte(page)); len(sha) != 40 {
		t.Fatalf("PutFile returned commit %q", sha)
	}
	s.WaitRaw(t, "alice", "site", "pages", "index.html")

	u := s.URL() + "/api/v1/repos/alice/site/raw/index.html?ref=pages"
	status, body, etag := fetch(t, s, u, "")
	if status != http.StatusOK || body != page || etag == "" {
		t.Fatalf("raw: status %d, body %q, ETag %q; want 200, %q and an ETag", status, body, etag, page)
	}
	if status, _, _ := fetch(t, s, u, etag); status != http.StatusNotModified {
		t.Fatalf("raw with If-None-Match %s: status %d, want 304", etag, status)
	}

	s.Stop()
	if _, err := http.Get(u); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after Stop: %v, want connection refused", err)
	}
	s.Stop() // idempotent
	url := s.URL()
	begin = time.Now()
	s.Restart()
	t.Logf("Restart took %s", time.Since(begin).Round(time.Millisecond))
	if s.URL() != url {
		t.Fatalf("Restart moved from %s to %s", url, s.URL())
	}
	if status, body, _ := fetch(t, s, u, ""); status != http.StatusOK || body != page {
		t.Fatalf("raw after Restart: status %d, body %q", status, body)
	}
}

// TestHelpers covers the helpers TestGiteaLifecycle does not: orgs, updates,
// deletes and a signed push webhook to a loopback receiver.
func TestHelpers(t *testing.T) {
	t.Parallel()
	type push struct {
		event, signature string
		body             []byte
	}
	pushes := make(chan push, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		pushes <- push{r.Header.Get("X-Gitea-Event"), r.Header.Get("X-Gitea-Signature"), b}
	}))
	defer hook.Close()

	s := Start(t)
	s.CreateOrg(t, "acme")
	s.CreateRepo(t, "acme", "www")
	s.CreateRepo(t, s.AdminUser(), "own")
	s.AddWebhook(t, "acme", "www", hook.URL, "s3cret")

	c1 := s.PutFile(t, "acme", "www", "main", "docs/a b.html", []byte("v1"))
	s.WaitRaw(t, "acme", "www", "main", "docs/a b.html")
	c2 := s.PutFile(t, "acme", "www", "main", "docs/a b.html", []byte("v2"))
	if c1 == c2 {
		t.Fatalf("update gave the same commit %s", c1)
	}
	raw := s.RawURL("acme", "www", "main", "docs/a b.html")
	if status, body, _ := fetch(t, s, raw, ""); status != http.StatusOK || body != "v2" {
		t.Fatalf("after update: status %d, body %q", status, body)
	}
	s.DeleteFile(t, "acme", "www", "main", "docs/a b.html")
	if status, _, _ := fetch(t, s, raw, ""); status != http.StatusNotFound {
		t.Fatalf("after delete: status %d, want 404", status)
	}

	// Three commits, three push deliveries, each signed with the secret.
	want := map[string]bool{c1: true, c2: true}
	for range 3 {
		var p push
		select {
		case p = <-pushes:
		case <-time.After(30 * time.Second):
			t.Fatal("no push webhook within 30s")
		}
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(p.body)
		if p.event != "push" || p.signature != hex.EncodeToString(mac.Sum(nil)) {
			t.Fatalf("webhook: event %q, signature %q", p.event, p.signature)
		}
		var ev struct {
			Ref   string `json:"ref"`
			After string `json:"after"`
		}
		if err := json.Unmarshal(p.body, &ev); err != nil || ev.Ref != "refs/heads/main" {
			t.Fatalf("webhook body: ref %q, %v", ev.Ref, err)
		}
		delete(want, ev.After)
	}
	if len(want) != 0 {
		t.Fatalf("no push for commits %v", want)
	}
}

// fetch GETs u with the admin token and, if etag is set, If-None-Match.
func fetch(t *testing.T, s *Server, u, etag string) (status int, body, gotETag string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "token "+s.Token())
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header.Get("ETag")
}
