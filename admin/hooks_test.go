package admin

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// pushPayload is a Gitea push payload for owner/repo's branch, moved to
// after.
func pushPayload(t *testing.T, owner, repo, branch, after string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"ref":   "refs/heads/" + branch,
		"after": after,
		"repository": map[string]any{
			"name":  repo,
			"owner": map[string]any{"login": owner, "username": owner},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signedPost sends body to /hooks/gitea signed with secret, as Gitea does.
func signedPost(t *testing.T, srv *httptest.Server, secret string, body []byte) int {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/hooks/gitea", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// served reads / of repo as a visitor would get it.
func served(t *testing.T, repo *gitea.Repo) string {
	t.Helper()
	f, err := repo.Get([]byte("/"))
	if err != nil {
		return "error: " + err.Error()
	}
	if f.Body == nil {
		t.Fatal("index.html is small: it must be cached whole")
	}
	return string(f.Body)
}

// TestGiteaHookRevalidates runs the push webhook against a real Gitea: a
// signed payload is only a hint that a branch moved. The served commit is
// always the head Gitea reports, so replaying an old delivery, or signing a
// payload whose "after" names another commit (old, unknown or not yet
// pushed), never moves a site away from its branch head.
func TestGiteaHookRevalidates(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "blog")
	gs.CreateBranch(t, "alice", "blog", "pages", "main")
	c1 := gs.PutFile(t, "alice", "blog", "pages", "index.html", []byte("blog v1"))
	gs.WaitRaw(t, "alice", "blog", c1, "index.html")

	// An hour of Revalidate: only the webhook can move the served commit
	// during the test.
	cfg := sites.Config{GiteaURL: gs.URL(), GiteaToken: gs.Token(), Revalidate: time.Hour, NegativeTTL: time.Hour}
	g, err := gitea.New(content.NewCache(cfg), cfg, gitea.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const secret = "hook-secret-0123456789"
	reg, err := sites.New(context.Background(), storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Token: testToken}, reg, Options{Metrics: prometheus.NewRegistry(), Gitea: g, GiteaWebhookSecret: secret,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	blog := g.Repo("alice", "blog", "pages")
	home := g.Repo("alice", "blog", "") // the pages rule resolves to the same branch
	for _, r := range []*gitea.Repo{blog, home} {
		if got := served(t, r); got != "blog v1" {
			t.Fatalf("%s before any push: %q", r.Name(), got)
		}
	}
	c2 := gs.PutFile(t, "alice", "blog", "pages", "index.html", []byte("blog v2"))
	gs.WaitRaw(t, "alice", "blog", c2, "index.html")
	deliveryOfC2 := pushPayload(t, "alice", "blog", "pages", c2)

	// The steps run in order on the same repository; each says what a
	// visitor is served after the delivery.
	steps := []struct {
		name string
		body []byte
		want string
	}{
		{"the real delivery of the push moves to the new head", deliveryOfC2, "blog v2"},
		{"a replay of the first push's delivery does not move back", pushPayload(t, "alice", "blog", "pages", c1), "blog v2"},
		{"a signed payload naming a commit that does not exist is ignored", pushPayload(t, "alice", "blog", "pages", strings.Repeat("ab", 20)), "blog v2"},
		{"a payload saying the branch was deleted does not delete it", pushPayload(t, "alice", "blog", "pages", strings.Repeat("0", 40)), "blog v2"},
		{"a replay of the current delivery changes nothing", deliveryOfC2, "blog v2"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if code := signedPost(t, srv, secret, st.body); code != http.StatusNoContent {
				t.Fatalf("webhook: status %d; want 204", code)
			}
			for _, r := range []*gitea.Repo{blog, home} {
				if got := served(t, r); got != st.want {
					t.Errorf("%s serves %q; want %q", r.Name(), got, st.want)
				}
			}
		})
	}

	// A replay of the served commit's delivery asks Gitea nothing: the
	// webhook cannot be turned into a stream of API calls by replaying it.
	calls := g.Calls.Load()
	for range 10 {
		if code := signedPost(t, srv, secret, deliveryOfC2); code != http.StatusNoContent {
			t.Fatalf("replayed webhook: status %d; want 204", code)
		}
	}
	if n := g.Calls.Load() - calls; n != 0 {
		t.Fatalf("10 replays of the served commit's delivery made %d Gitea calls; want 0", n)
	}
}
