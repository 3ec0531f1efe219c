package console

// Sessions, sign-in and the checks every form post passes.
//
// The cookie holds a random session id, never the token: the server keeps,
// in memory, the SHA-256 of the id mapped to the token's secret, the
// session's CSRF token and its expiry. Each request resolves the token
// again (Tokens.Tenant), so a revoked or expired token, or a changed
// scope, takes effect at once. Sessions live in this process: a restart
// signs everyone out, and a cluster needs sticky sessions for the console.

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// cookieName is the session cookie.
const cookieName = "tollgate_console"

// maxFormBytes bounds a form post.
const maxFormBytes = 64 << 10

// session is one signed-in browser: a copy, with the tenant resolved for
// this request.
type session struct {
	key     [32]byte // SHA-256 of the cookie's id
	secret  string
	csrf    string
	expires time.Time
	tenant  Tenant
}

type sessions struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[[32]byte]*session
}

func newSessions(ttl time.Duration, max int, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, max: max, now: now, m: map[[32]byte]*session{}}
}

// randomToken is 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for secret and returns the cookie's id.
func (ss *sessions) create(secret string) string {
	id := randomToken()
	s := session{key: sha256.Sum256([]byte(id)), secret: secret, csrf: randomToken(), expires: ss.now().Add(ss.ttl)}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= ss.max {
		ss.evictLocked()
	}
	ss.m[s.key] = &s
	return id
}

// evictLocked drops the expired sessions, or else the one closest to its
// expiry.
func (ss *sessions) evictLocked() {
	now := ss.now()
	var oldest *session
	for k, s := range ss.m {
		if !now.Before(s.expires) {
			delete(ss.m, k)
		} else if oldest == nil || s.expires.Before(oldest.expires) {
			oldest = s
		}
	}
	if len(ss.m) >= ss.max && oldest != nil {
		delete(ss.m, oldest.key)
	}
}

// get returns a copy of the live session of id.
func (ss *sessions) get(id string) (session, bool) {
	key := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[key]
	if !ok {
		return session{}, false
	}
	if !ss.now().Before(s.expires) {
		delete(ss.m, key)
		return session{}, false
	}
	return *s, true
}

func (ss *sessions) end(key [32]byte) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, key)
}

var errNoSession = &pageError{status: http.StatusUnauthorized, msg: "You are not signed in, or your session ended. Sign in again."}

// session returns the request's session with its tenant resolved now; a
// token that no longer resolves ends the session.
func (c *Console) session(r *http.Request) (*session, error) {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return nil, errNoSession
	}
	s, ok := c.sessions.get(ck.Value)
	if !ok {
		return nil, errNoSession
	}
	t, err := c.opts.Tokens.Tenant(r.Context(), s.secret)
	if err != nil {
		if tokenMessage(err) == "" {
			return nil, err // the token store failed: the session stays
		}
		c.sessions.end(s.key)
		return nil, errNoSession
	}
	s.tenant = t
	return &s, nil
}

// tokenMessage is what sign-in tells of a token Tokens refused, "" for
// an error that is not about the token.
func tokenMessage(err error) string {
	switch {
	case errors.Is(err, ErrTokenUnknown):
		return "This token is not valid. Check that you copied all of it."
	case errors.Is(err, ErrTokenRevoked):
		return "This token has been revoked. Ask an admin of your org for a new one."
	case errors.Is(err, ErrTokenExpired):
		return "This token has expired. Ask an admin of your org for a new one."
	}
	return ""
}

func (c *Console) setCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	if _, err := c.session(r); err == nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	c.render(w, nil, http.StatusOK, "signin", "Sign in", map[string]any{})
}

// signin checks the token of the form and starts a session. The token is
// never written back, not even into the form after a failure.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	if err := sameOrigin(r); err != nil {
		c.fail(w, r, nil, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	secret := r.PostFormValue("token")
	if secret == "" {
		c.render(w, nil, http.StatusBadRequest, "signin", "Sign in", map[string]any{"Error": "Enter your token."})
		return
	}
	if _, err := c.opts.Tokens.Tenant(r.Context(), secret); err != nil {
		msg := tokenMessage(err)
		if msg == "" {
			c.fail(w, r, nil, err)
			return
		}
		c.render(w, nil, http.StatusUnauthorized, "signin", "Sign in", map[string]any{"Error": msg})
		return
	}
	id := c.sessions.create(secret)
	c.setCookie(w, id, int(c.cfg.SessionTTL/time.Second))
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session) error {
	c.sessions.end(s.key)
	c.setCookie(w, "", -1)
	http.Redirect(w, r, Prefix+"signin", http.StatusSeeOther)
	return nil
}

var errForeignOrigin = &pageError{status: http.StatusForbidden,
	msg: "This form was sent from another site. Open the console and send it from there."}

// sameOrigin refuses a request a browser says comes from another site:
// Sec-Fetch-Site other than same-origin, or an Origin whose host is not
// the request's. A request with neither header (not a browser's) passes;
// the CSRF token still guards it.
func sameOrigin(r *http.Request) error {
	if v := r.Header.Get("Sec-Fetch-Site"); v != "" && v != "same-origin" {
		return errForeignOrigin
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || u.Host != r.Host {
			return errForeignOrigin
		}
	}
	return nil
}

// checkPost is the CSRF check of a form post of a session: same origin,
// and the session's CSRF token in the form, compared in constant time.
func (c *Console) checkPost(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := sameOrigin(r); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	got := r.PostFormValue("csrf")
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
		return &pageError{status: http.StatusForbidden, msg: "This form has expired or did not come from the console. Reload the page and try again."}
	}
	return nil
}
