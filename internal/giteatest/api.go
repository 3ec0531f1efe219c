package giteatest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// rawTimeout bounds WaitRaw: a file written to a fresh repository can 404 on
// the raw endpoint for about two seconds.
const rawTimeout = 30 * time.Second

// The helpers below call Gitea's API as the admin with Token. Each fails t on
// any error, so call them from the test's goroutine.

// CreateUser creates a normal user (password login, no forced change).
func (s *Server) CreateUser(t testing.TB, name string) {
	t.Helper()
	s.must(t, http.MethodPost, "/admin/users", map[string]any{
		"username": name, "email": name + "@example.com", "password": randomHex(16),
		"must_change_password": false,
	}, http.StatusCreated, nil)
}

// CreateOrg creates a public organization owned by the admin.
func (s *Server) CreateOrg(t testing.TB, name string) {
	t.Helper()
	s.must(t, http.MethodPost, "/orgs", map[string]any{"username": name, "visibility": "public"}, http.StatusCreated, nil)
}

// CreateRepo creates a public repository owned by a user or an org, with an
// initial commit (a README) on the default branch "main".
func (s *Server) CreateRepo(t testing.TB, owner, repo string) {
	t.Helper()
	path := "/admin/users/" + url.PathEscape(owner) + "/repos" // also works for orgs
	if owner == s.admin {
		path = "/user/repos"
	}
	s.must(t, http.MethodPost, path, map[string]any{
		"name": repo, "auto_init": true, "default_branch": "main", "private": false,
	}, http.StatusCreated, nil)
}

// CreateBranch creates branch from the branch, tag or commit from.
func (s *Server) CreateBranch(t testing.TB, owner, repo, branch, from string) {
	t.Helper()
	s.must(t, http.MethodPost, repoPath(owner, repo)+"/branches", map[string]any{
		"new_branch_name": branch, "old_ref_name": from,
	}, http.StatusCreated, nil)
}

// PutFile creates or updates path on branch, one commit, and returns the
// commit's SHA.
func (s *Server) PutFile(t testing.TB, owner, repo, branch, path string, content []byte) (commitSHA string) {
	t.Helper()
	body := map[string]any{
		"branch": branch, "content": base64.StdEncoding.EncodeToString(content),
		"message": "giteatest: put " + path,
	}
	method, want := http.MethodPost, http.StatusCreated
	if sha := s.blobSHA(t, owner, repo, branch, path); sha != "" {
		method, want = http.MethodPut, http.StatusOK
		body["sha"] = sha
	}
	var resp struct {
		Commit struct {
			SHA string `json:"sha"`
		} `json:"commit"`
	}
	s.must(t, method, contentsPath(owner, repo, path), body, want, &resp)
	if resp.Commit.SHA == "" {
		t.Fatalf("giteatest: %s %s/%s %s: no commit sha in the answer", method, owner, repo, path)
	}
	return resp.Commit.SHA
}

// DeleteFile deletes path on branch in one commit; the file must exist.
func (s *Server) DeleteFile(t testing.TB, owner, repo, branch, path string) {
	t.Helper()
	sha := s.blobSHA(t, owner, repo, branch, path)
	if sha == "" {
		t.Fatalf("giteatest: delete %s/%s %s on %s: no such file", owner, repo, path, branch)
	}
	s.must(t, http.MethodDelete, contentsPath(owner, repo, path), map[string]any{
		"branch": branch, "sha": sha, "message": "giteatest: delete " + path,
	}, http.StatusOK, nil)
}

// AddWebhook makes Gitea POST push events to url as JSON, signed with secret
// (X-Gitea-Signature: hex HMAC-SHA256 of the body).
func (s *Server) AddWebhook(t testing.TB, owner, repo, url, secret string) {
	t.Helper()
	s.must(t, http.MethodPost, repoPath(owner, repo)+"/hooks", map[string]any{
		"type":   "gitea",
		"active": true,
		"events": []string{"push"},
		"config": map[string]string{"url": url, "content_type": "json", "secret": secret},
	}, http.StatusCreated, nil)
}

// WaitRaw polls the raw endpoint for path at ref until it answers 200.
func (s *Server) WaitRaw(t testing.TB, owner, repo, ref, path string) {
	t.Helper()
	u := s.RawURL(owner, repo, ref, path)
	deadline := time.Now().Add(rawTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		status, err := s.get(u)
		if err == nil && status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("giteatest: %s not 200 after %s: status %d, %v", u, rawTimeout, status, err)
		}
		<-tick.C
	}
}

// RawURL is the raw endpoint for path at ref (a branch, tag or commit).
func (s *Server) RawURL(owner, repo, ref, path string) string {
	return s.URL() + "/api/v1" + repoPath(owner, repo) + "/raw/" + escapePath(path) + "?ref=" + url.QueryEscape(ref)
}

// get is a GET with the token whose body is discarded.
func (s *Server) get(u string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "token "+s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// blobSHA is the blob SHA of path on branch, or "" if there is no such file.
func (s *Server) blobSHA(t testing.TB, owner, repo, branch, path string) string {
	t.Helper()
	var c struct {
		Type string `json:"type"`
		SHA  string `json:"sha"`
	}
	status, err := s.call(http.MethodGet, contentsPath(owner, repo, path)+"?ref="+url.QueryEscape(branch), nil, &c)
	switch {
	case status == http.StatusNotFound:
		return ""
	case err != nil:
		t.Fatalf("giteatest: %v", err)
	case status != http.StatusOK:
		t.Fatalf("giteatest: GET contents of %s/%s %s on %s: status %d", owner, repo, path, branch, status)
	case c.Type != "file":
		t.Fatalf("giteatest: %s/%s %s on %s is a %s, not a file", owner, repo, path, branch, c.Type)
	}
	return c.SHA
}

// must is call that fails t unless the answer has status want.
func (s *Server) must(t testing.TB, method, path string, body any, want int, out any) {
	t.Helper()
	status, err := s.call(method, path, body, out)
	if err != nil {
		t.Fatalf("giteatest: %v", err)
	}
	if status != want {
		t.Fatalf("giteatest: %s /api/v1%s: status %d, want %d", method, path, status, want)
	}
}

// call sends body as JSON to /api/v1+path and decodes a 2xx answer into out.
// A non-2xx answer is an error that carries Gitea's message.
func (s *Server) call(method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL()+"/api/v1"+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "token "+s.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s /api/v1%s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s /api/v1%s: decoding the answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func repoPath(owner, repo string) string {
	return "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo)
}

func contentsPath(owner, repo, path string) string {
	return repoPath(owner, repo) + "/contents/" + escapePath(path)
}

// escapePath escapes each segment of a slash-separated file path.
func escapePath(p string) string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return strings.Join(segs, "/")
}
