package content_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// pathRuleSite is the site every source of TestPathRule serves.
var pathRuleSite = map[string]string{
	"index.html":      "home",
	"about.html":      "about",
	"docs/index.html": "docs",
	"assets/app.css":  "body{}",
	"blog.html":       "blog index",
	"blog/post.html":  "post",
}

// pathRuleCases are the answers of content.Resolve's rule, the same for
// every source.
var pathRuleCases = []struct {
	path, body string
	err        error
}{
	{"/", "home", nil},
	{"/about", "about", nil}, // a clean URL: about.html
	{"/about.html", "about", nil},
	{"/docs/", "docs", nil},
	{"/docs", "", content.ErrIsDir},   // a directory: the proxy redirects to /docs/
	{"/assets", "", content.ErrIsDir}, // one without index.html too
	{"/assets/", "", content.ErrFileNotFound},
	{"/assets/app.css", "body{}", nil},
	{"/assets/app.css/", "", content.ErrFileNotFound},
	{"/blog", "blog index", nil}, // blog.html comes before the blog/ directory
	{"/blog/", "", content.ErrFileNotFound},
	{"/blog/post", "post", nil},
	{"/missing", "", content.ErrFileNotFound},
	{"/.git/config", "", content.ErrFileNotFound},
	{"/a\x00b", "", content.ErrBadPath},
}

// getter is what TestPathRule asks of a source: *content.DirSource and
// *gitea.Repo.
type getter interface {
	Get(urlPath []byte) (*content.File, error)
}

// TestPathRule runs the same cases against a directory and a Gitea
// repository holding the same files: both answer by content.Resolve, the
// second time from the cache.
func TestPathRule(t *testing.T) {
	sources := []struct {
		name string
		open func(t *testing.T) getter
	}{
		{"dir", openDirSite},
		{"gitea", openGiteaSite},
	}
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			s := src.open(t)
			for _, tt := range pathRuleCases {
				t.Run(tt.path, func(t *testing.T) {
					for range 2 { // the second answer comes from the cache
						body, err := read(t, s, tt.path)
						if !errors.Is(err, tt.err) || body != tt.body {
							t.Fatalf("Get(%q) = %q, %v; want %q, %v", tt.path, body, err, tt.body, tt.err)
						}
					}
				})
			}
		})
	}
}

func openDirSite(t *testing.T) getter {
	root := t.TempDir()
	for name, body := range pathRuleSite {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, err := content.NewCache(sites.Config{DirRevalidate: time.Hour}).OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func openGiteaSite(t *testing.T) getter {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "site")
	for name, body := range pathRuleSite {
		gs.PutFile(t, "alice", "site", "main", name, []byte(body))
	}
	gs.WaitRaw(t, "alice", "site", "main", "blog/post.html")
	cfg := sites.Config{GiteaURL: gs.URL(), GiteaToken: gs.Token(), Revalidate: time.Hour, NegativeTTL: time.Hour}
	g, err := gitea.New(content.NewCache(cfg), cfg, gitea.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return g.Repo("alice", "site", "main")
}

func read(t *testing.T, s getter, path string) (string, error) {
	t.Helper()
	f, err := s.Get([]byte(path))
	if err != nil {
		return "", err
	}
	if f.Body != nil {
		return string(f.Body), nil
	}
	rc, err := f.Open()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}
