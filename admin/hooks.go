package admin

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// GiteaPushes learns of pushes. *gitea.Source implements it.
type GiteaPushes interface {
	// Pushed rechecks the pushed branch's head with Gitea; the payload is
	// only a hint and never sets the served commit itself.
	Pushed(ctx context.Context, p gitea.Push) error
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
// to a branch makes tollgate ask Gitea for that branch's head at once and
// serve it: a replayed or forged delivery moves nothing, since its "after"
// is only compared with the served commit. Gitea unreachable: 502 (the
// branch is rechecked on its next request).
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
	if err := s.gitea.Pushed(r.Context(), gitea.Push{Owner: strings.ToLower(owner), Repo: p.Repository.Name, Branch: branch, After: p.After}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
