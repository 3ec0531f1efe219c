// Package admin is tollgate's operator API: an HTTP/JSON interface to the
// registry of plans, orgs, sites and domains, the health and metrics endpoints,
// and the `tollgate admin` command-line client that talks to it.
//
// The server does not listen by itself: the caller serves Handler with its own
// http.Server on the admin address. Every /v1 route requires a bearer token;
// errors are answered as RFC 7807 application/problem+json.
package admin

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 1 << 20

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
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
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
	return errors.Join(errs...)
}
