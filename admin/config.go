// Package admin is tollgate's operator API: an HTTP/JSON interface to the
// registry of plans, orgs, sites and domains, the health and metrics endpoints,
// and the `tollgate admin` command-line client that talks to it.
//
// The server does not listen by itself: the caller serves Handler with its own
// http.Server on the admin address, and APIHandler, the tenant API, on the
// [server] api address. Every /v1 route but the plan catalog requires a
// bearer token: the admin token, or an org-scoped token confined to its org
// (access.go); errors are answered as RFC 7807 application/problem+json.
package admin

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 1 << 20

// DefaultRequestsPerSecond is the request-rate limit per token when
// Config.RequestsPerSecond is 0.
const DefaultRequestsPerSecond = 50

// minTokenLen is the shortest admin token accepted.
const minTokenLen = 16

// Config holds the admin API settings. The keys live in the [server] section,
// which the caller owns; it copies their values here.
type Config struct {
	// Token is the bearer token every /v1 route requires
	// ("Authorization: Bearer <token>"). Key: server.admin_token. Required, at
	// least 16 characters; generate it (e.g. `openssl rand -hex 32`) and treat it
	// as a secret: it grants full control of the registry.
	Token string
	// MaxBodyBytes caps the size of a request body; a larger body is answered
	// 413. Key: server.admin_max_body_bytes. Default: 1 MiB, far above any valid
	// request.
	MaxBodyBytes int64
	// RequestsPerSecond caps the requests to /v1 routes (and /debug/pprof)
	// each second, per bearer token, and per client address for requests
	// without a valid token, so strangers cannot use up the token's
	// budget. Past it: 429, a problem of type
	// urn:tollgate:problem:rate-limited with Retry-After, RateLimit-Policy
	// ("admin";q=N;w=1) and RateLimit. /healthz, /readyz, /metrics and
	// /hooks/gitea are not limited. Key: server.admin_requests_per_second.
	// Default 50; -1 turns the limit off.
	RequestsPerSecond int
	// Burst is the requests a token (or address) may send at once after a
	// quiet while. Key: server.admin_burst. Default twice
	// RequestsPerSecond (100).
	Burst int
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.RequestsPerSecond == 0 {
		c.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if c.Burst == 0 {
		c.Burst = 2 * c.RequestsPerSecond
	}
}

// Validate reports every bad key. It is pure and fast.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Token == "":
		errs = append(errs, errors.New("server.admin_token: required (the bearer token of the admin API)"))
	case len(c.Token) < minTokenLen:
		errs = append(errs, fmt.Errorf("server.admin_token: must be at least %d characters, got %d", minTokenLen, len(c.Token)))
	case strings.ContainsAny(c.Token, " \t\r\n"):
		errs = append(errs, errors.New("server.admin_token: must not contain whitespace"))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("server.admin_max_body_bytes: must not be negative, got %d", c.MaxBodyBytes))
	}
	if c.RequestsPerSecond < -1 || c.RequestsPerSecond > 1_000_000 {
		errs = append(errs, fmt.Errorf("server.admin_requests_per_second: %d not in 1..1000000, or -1 (off)", c.RequestsPerSecond))
	}
	if c.RequestsPerSecond > 0 && (c.Burst < 1 || c.Burst > 2_000_000) {
		errs = append(errs, fmt.Errorf("server.admin_burst: %d not in 1..2000000", c.Burst))
	}
	return errors.Join(errs...)
}
