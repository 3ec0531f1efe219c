package gitea

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
)

func newGiteaSource(t *testing.T, gs *giteatest.Server, cfg sites.Config, opts Options) *Source {
	t.Helper()
	cfg.GiteaURL = gs.URL()
	cfg.GiteaToken = gs.Token()
	g, err := New(content.NewCache(cfg), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func get(t *testing.T, src *Repo, p string) (string, error) {
	t.Helper()
	f, err := src.Get([]byte(p))
	if err != nil {
		return "", err
	}
	if f.Body == nil {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	return string(f.Body), nil
}

// TestGiteaSource runs against a real Gitea: content by commit, the pages
// rules, freshness by revalidation and by webhook, stale-if-error and the
// negative cache.
func TestGiteaSource(t *testing.T) {
	gs := giteatest.Start(t)
	ctx := context.Background()
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "pages")
	gs.CreateRepo(t, "alice", "blog")
	gs.CreateBranch(t, "alice", "blog", "pages", "main")
	gs.PutFile(t, "alice", "pages", "main", "index.html", []byte("<h1>alice home</h1>"))
	gs.PutFile(t, "alice", "pages", "main", "about.html", []byte("about alice"))
	gs.PutFile(t, "alice", "pages", "main", "docs/index.html", []byte("docs"))
	gs.PutFile(t, "alice", "pages", "main", "style.css", []byte(strings.Repeat("p{color:red}\n", 100)))
	gs.PutFile(t, "alice", "pages", "main", "big.bin", []byte(strings.Repeat("0123456789", 20000)))
	gs.PutFile(t, "alice", "blog", "pages", "index.html", []byte("blog v1"))
	gs.PutFile(t, "alice", "pages", "main", "burst.html", []byte("many at once"))
	gs.WaitRaw(t, "alice", "pages", "main", "index.html")
	gs.WaitRaw(t, "alice", "blog", "pages", "index.html")

	g := newGiteaSource(t, gs, sites.Config{Revalidate: time.Hour, NegativeTTL: time.Hour, MaxCachedFile: 64 << 10}, Options{})
	home := g.Repo("alice", "pages", "") // no pages branch: the default branch
	tests := []struct {
		path, body string
		err        error
	}{
		{"/", "<h1>alice home</h1>", nil},
		{"/about", "about alice", nil},
		{"/about.html", "about alice", nil},
		{"/docs/", "docs", nil},
		{"/docs", "", content.ErrIsDir},
		{"/missing", "", content.ErrFileNotFound},
		{"/../blog/index.html", "", content.ErrFileNotFound},
		{"/.git/config", "", content.ErrFileNotFound},
		{"/a\x00b", "", content.ErrBadPath},
		{"/big.bin", strings.Repeat("0123456789", 20000), nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			body, err := get(t, home, tt.path)
			if !errors.Is(err, tt.err) || body != tt.body {
				t.Fatalf("Get(%q) = %.40q, %v; want %.40q, %v", tt.path, body, err, tt.body, tt.err)
			}
		})
	}
	css, _ := home.Get([]byte("/style.css"))
	if string(css.ContentType) != "text/css; charset=utf-8" || css.Gzip == nil {
		t.Fatalf("style.css: type %q, gzip %d bytes", css.ContentType, len(css.Gzip))
	}
	idx, _ := home.Get([]byte("/"))
	if string(idx.ContentType) != "text/html; charset=utf-8" {
		t.Fatalf("index.html type %q (Gitea says text/plain; the extension decides)", idx.ContentType)
	}

	// A large file streams with ranges: Seek starts a ranged request.
	big, _ := home.Get([]byte("/big.bin"))
	rc, err := big.Open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Seek(100_005, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 10)
	if _, err := io.ReadFull(rc, part); err != nil || string(part) != "5678901234" {
		t.Fatalf("ranged read: %q, %v", part, err)
	}
	rc.Close()

	// Concurrent misses for one file: one fetch.
	calls0 := g.Calls.Load()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if body, err := get(t, home, "/burst.html"); err != nil || body != "many at once" {
				t.Errorf("burst: %q %v", body, err)
			}
		}()
	}
	wg.Wait()
	if n := g.Calls.Load() - calls0; n != 1 {
		t.Fatalf("%d Gitea calls for 20 concurrent misses of one file; want 1", n)
	}

	// Storage: the files of the served commit.
	size, err := home.TreeSize(ctx)
	want := int64(len("<h1>alice home</h1>") + len("about alice") + len("docs") + 100*len("p{color:red}\n") + 200000)
	if err != nil || size < want || size > want+1024 { // + the README of auto_init
		t.Fatalf("TreeSize = %d, %v; want about %d", size, err, want)
	}

	// Cached: no Gitea call for hits, nor for a remembered miss.
	calls := g.Calls.Load()
	for range 20 {
		home.Get([]byte("/"))
		home.Get([]byte("/missing"))
	}
	if n := g.Calls.Load() - calls; n != 0 {
		t.Fatalf("%d Gitea calls for cached hits and misses; want 0", n)
	}

	// An unknown owner at crawler rate: one look-up per negative period.
	calls = g.Calls.Load()
	for range 50 {
		if _, err := g.Repo("nobody", "pages", "").Get([]byte("/")); !errors.Is(err, content.ErrFileNotFound) {
			t.Fatalf("unknown owner: %v", err)
		}
	}
	if n := g.Calls.Load() - calls; n > 3 {
		t.Fatalf("%d Gitea calls for 50 requests to an unknown owner; want at most 3 (branch, repo)", n)
	}

	// A push: the webhook moves the head at once; the old commit's files are gone.
	blog := g.Repo("alice", "blog", "pages")
	if body, _ := get(t, blog, "/"); body != "blog v1" {
		t.Fatalf("blog: %q", body)
	}
	commit := gs.PutFile(t, "alice", "blog", "pages", "index.html", []byte("blog v2"))
	if body, _ := get(t, blog, "/"); body != "blog v1" {
		t.Fatalf("before any signal the known commit is served: %q", body)
	}
	mustNoErr(t, g.Pushed(ctx, Push{Owner: "alice", Repo: "blog", Branch: "pages", After: commit}))
	if body, err := get(t, blog, "/"); body != "blog v2" {
		t.Fatalf("after the webhook: %q, %v", body, err)
	}

	// Without a webhook: the head is rechecked in the background after
	// Revalidate, on the source's clock. Each poll is a Revalidate later: a
	// check that still saw the old head is followed by another.
	clk := clocktest.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	g2 := newGiteaSource(t, gs, sites.Config{Revalidate: time.Minute, NegativeTTL: time.Hour}, Options{Now: clk.Now})
	blog2 := g2.Repo("alice", "blog", "pages")
	get(t, blog2, "/")
	gs.PutFile(t, "alice", "blog", "pages", "index.html", []byte("blog v3"))
	clk.Add(time.Minute - time.Nanosecond)
	calls = g2.Calls.Load()
	if body, _ := get(t, blog2, "/"); body != "blog v2" || g2.Calls.Load() != calls {
		t.Fatalf("within Revalidate: %q after %d Gitea calls; want the known commit (blog v2), no call", body, g2.Calls.Load()-calls)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		clk.Add(time.Minute)
		body, _ := get(t, blog2, "/")
		if body == "blog v3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revalidation did not pick up the push: %q", body)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}

	// Gitea down: cached pages keep being served, uncached ones fail fast.
	get(t, home, "/about")
	gs.Stop()
	if body, err := get(t, home, "/about"); err != nil || body != "about alice" {
		t.Fatalf("cached page with Gitea down: %q, %v", body, err)
	}
	start := time.Now()
	if _, err := home.Get([]byte("/never-fetched")); !errors.Is(err, ErrUpstream) {
		t.Fatalf("uncached page with Gitea down: %v; want ErrUpstream", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("uncached page with Gitea down took %v", d)
	}
	if ok, err := g.Repo("bob", "pages", "").Exists(); ok || !errors.Is(err, ErrUpstream) {
		t.Fatalf("unknown repo with Gitea down: %v %v", ok, err)
	}
}

// TestGiteaSlow: a Gitea that does not answer gets ErrUpstream within
// gitea_timeout (httptest: a real Gitea cannot be made slow).
func TestGiteaSlow(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer slow.Close()
	defer close(release)
	cfg := sites.Config{GiteaURL: slow.URL, GiteaTimeout: 200 * time.Millisecond}
	g, err := New(content.NewCache(cfg), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := g.Repo("a", "pages", "").Get([]byte("/")); !errors.Is(err, ErrUpstream) {
		t.Fatalf("slow Gitea: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("slow Gitea answered after %v; want about 200ms", d)
	}
}
