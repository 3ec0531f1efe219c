package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// GiteaInvalidator learns of pushes. *sites.Gitea implements it.
type GiteaInvalidator interface {
	Invalidate(owner, repo, branch, commit string)
}

// maxHookBytes bounds a webhook body (Gitea sends the commits of the push).
const maxHookBytes = 5 << 20

// giteaPush is the part of Gitea's push payload tollgate reads.
type giteaPush struct {
	Ref        string `json:"ref"`
	After      string `json:"after"`
	Repository struct {
		Name  string `json:"name"`
		Owner struct {
			Login    string `json:"login"`
			Username string `json:"username"`
		} `json:"owner"`
	} `json:"repository"`
}

// giteaHook serves POST /hooks/gitea: a push webhook, authenticated by its
// HMAC-SHA256 signature (X-Gitea-Signature) with [sites]
// gitea_webhook_secret, not by the admin token, so Gitea can call it. A push
// to a branch moves that repository's served commit at once.
func (s *Server) giteaHook(w http.ResponseWriter, r *http.Request) error {
	if s.gitea == nil || s.hookSecret == "" {
		return errNoRoute
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHookBytes))
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, []byte(s.hookSecret))
	mac.Write(body)
	got, err := hex.DecodeString(r.Header.Get("X-Gitea-Signature"))
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return errUnauthorized
	}
	var p giteaPush
	if err := json.Unmarshal(body, &p); err != nil {
		return badRequest("invalid push payload: %v", err)
	}
	owner := p.Repository.Owner.Login
	if owner == "" {
		owner = p.Repository.Owner.Username
	}
	branch, ok := strings.CutPrefix(p.Ref, "refs/heads/")
	if !ok || owner == "" || p.Repository.Name == "" {
		w.WriteHeader(http.StatusNoContent) // a tag or another event: nothing to do
		return nil
	}
	commit := p.After
	if strings.Trim(commit, "0") == "" {
		commit = "" // the branch was deleted: look it up again
	}
	s.gitea.Invalidate(strings.ToLower(owner), p.Repository.Name, branch, commit)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
