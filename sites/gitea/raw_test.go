package gitea

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
)

// fakeRepo answers what a Gitea asks of alice/site at branch main (commit
// c1): the branch, the raw files, and, with ext, contents-ext as Gitea
// 1.24 on does (404 for everything otherwise, as older Gitea does). It
// counts the raw calls.
func fakeRepo(t *testing.T, ext bool, files map[string]string) (url string, raw *atomic.Int64) {
	raw = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const repo = "/api/v1/repos/alice/site/"
		p, ok := strings.CutPrefix(r.URL.Path, repo)
		switch {
		case ok && p == "branches/main":
			w.Write([]byte(`{"name":"main","commit":{"id":"c1"}}`))
			return
		case ok && strings.HasPrefix(p, "raw/"):
			raw.Add(1)
			if body, ok := files[strings.TrimPrefix(p, "raw/")]; ok && r.URL.Query().Get("ref") == "c1" {
				w.Write([]byte(body))
				return
			}
		case ok && strings.HasPrefix(p, "contents-ext/") && ext:
			name := strings.TrimPrefix(p, "contents-ext/")
			if _, ok := files[name]; ok {
				w.Write([]byte(`{"file_contents":{"name":"x","type":"file"}}`))
				return
			}
			for f := range files {
				if strings.HasPrefix(f, name+"/") {
					w.Write([]byte(`{"dir_contents":[{"name":"x","type":"file"}]}`))
					return
				}
			}
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, raw
}

// TestIsDirOlderGitea: a Gitea without contents-ext (before 1.24) cannot
// tell a directory: a path is one when its index.html exists, so a
// directory without one is not found. With contents-ext every directory
// is, and a 404 is final: no index.html is asked.
func TestIsDirOlderGitea(t *testing.T) {
	files := map[string]string{"index.html": "home", "docs/index.html": "docs", "assets/app.css": "body{}"}
	for _, tt := range []struct {
		ext    bool
		assets error // what /assets is
		raw    int64 // raw calls for /missing
	}{
		{ext: false, assets: content.ErrFileNotFound, raw: 3},
		{ext: true, assets: content.ErrIsDir, raw: 2},
	} {
		url, rawCalls := fakeRepo(t, tt.ext, files)
		cfg := sites.Config{GiteaURL: url}
		g, err := New(content.NewCache(cfg), cfg, Options{})
		mustNoErr(t, err)
		r := g.Repo("alice", "site", "main")
		if _, err := r.Get([]byte("/docs")); !errors.Is(err, content.ErrIsDir) {
			t.Errorf("contents-ext %v: /docs: %v; want ErrIsDir", tt.ext, err)
		}
		if _, err := r.Get([]byte("/assets")); !errors.Is(err, tt.assets) {
			t.Errorf("contents-ext %v: /assets: %v; want %v", tt.ext, err, tt.assets)
		}
		raw := rawCalls.Load()
		if _, err := r.Get([]byte("/missing")); !errors.Is(err, content.ErrFileNotFound) {
			t.Errorf("contents-ext %v: /missing: %v; want ErrFileNotFound", tt.ext, err)
		}
		if n := rawCalls.Load() - raw; n != tt.raw {
			t.Errorf("contents-ext %v: %d raw calls for /missing; want %d", tt.ext, n, tt.raw)
		}
	}
}
