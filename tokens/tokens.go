// Package tokens issues, verifies and revokes org-scoped API tokens: the
// bearer tokens a tenant uses on the tenant API instead of the operator's
// admin token.
//
// A token is "tgt_" + its 16-hex-digit id + "_" + 64 hex digits of 32 random
// bytes. It is shown once, when it is created; the store keeps its SHA-256
// only. A plain hash is enough here, unlike for passwords: the secret has 256
// bits of entropy, so no dictionary or brute force reaches it, and a slow
// hash (bcrypt, argon2) would only make every API request cost a hash of
// tens of milliseconds that strangers could trigger at will.
//
// The records live in the registry's store (the bbolt file, or the shared
// Redis of a cluster), in buckets of their own, so every node of a cluster
// knows every token and a revocation holds on all of them at once.
package tokens

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Scope is one right a token grants within its org.
type Scope string

// Scopes.
const (
	// Read: the org, its usage and limits, sites, domains and events.
	Read Scope = "read"
	// Write: create and delete sites, keep or deactivate them, attach and
	// detach domains.
	Write Scope = "write"
	// Billing: checkout and customer-portal links.
	Billing Scope = "billing"
	// Admin: create, list and revoke the org's tokens.
	Admin Scope = "admin"
)

// AllScopes lists every scope, in the order the API documents them.
var AllScopes = []Scope{Read, Write, Billing, Admin}

// CreatorOperator is the CreatedBy of a token the operator created; one
// created by a tenant's admin-scoped token is "token:" and that token's id.
const CreatorOperator = "operator"

// Errors. The admin API maps them to statuses.
var (
	// ErrNotFound: no token of that id in that org.
	ErrNotFound = errors.New("token not found")
	// ErrInvalid: a token request with a bad field (scope, name, expiry).
	ErrInvalid = errors.New("invalid token request")
	// ErrUnauthorized: the bearer token is malformed, unknown, revoked or
	// expired. Which of these is not said.
	ErrUnauthorized = errors.New("the token is not valid")
)

// Token is a token's record, without its secret.
type Token struct {
	ID     string  `json:"id"`
	Org    string  `json:"org"`
	Name   string  `json:"name"`
	Scopes []Scope `json:"scopes"`
	// CreatedBy is "operator" or "token:ID" (a token with the admin scope).
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the token stops working; absent: never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// LastUsedAt is when the token last authenticated a request, to the
	// minute (it is written at most once a minute per token and node);
	// absent: never used.
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// Has reports whether t grants scope.
func (t Token) Has(scope Scope) bool { return slices.Contains(t.Scopes, scope) }

// Spec is what Create needs.
type Spec struct {
	Org       string
	Name      string
	Scopes    []Scope
	CreatedBy string
	// ExpiresAt, when not zero, must be in the future.
	ExpiresAt time.Time
}

// maxNameLen bounds a token's name.
const maxNameLen = 100

// validate checks s and returns its scopes sorted as AllScopes, without
// duplicates.
func (s Spec) validate(now time.Time) ([]Scope, error) {
	var errs []error
	if s.Org == "" {
		errs = append(errs, errors.New("org: required"))
	}
	if s.Name == "" || len(s.Name) > maxNameLen || strings.ContainsFunc(s.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		errs = append(errs, fmt.Errorf("name: 1 to %d printable characters", maxNameLen))
	}
	var scopes []Scope
	for _, sc := range s.Scopes {
		if !slices.Contains(AllScopes, sc) {
			errs = append(errs, fmt.Errorf("scopes: %q is none of read, write, billing, admin", sc))
		}
	}
	for _, sc := range AllScopes {
		if slices.Contains(s.Scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	if len(s.Scopes) == 0 {
		errs = append(errs, errors.New("scopes: at least one of read, write, billing, admin"))
	}
	if !s.ExpiresAt.IsZero() && !s.ExpiresAt.After(now) {
		errs = append(errs, errors.New("expires_at: must be in the future"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return scopes, nil
}

// ParseScopes reads a comma-separated list ("read,write").
func ParseScopes(s string) []Scope {
	var out []Scope
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, Scope(f))
		}
	}
	return out
}

// Covers reports whether a token with scopes may grant want: a tenant's
// admin token creates tokens with at most its own scopes.
func Covers(scopes, want []Scope) bool {
	for _, w := range want {
		if !slices.Contains(scopes, w) {
			return false
		}
	}
	return true
}

// Expiry reads "90d", "12h" or "30m" into a duration: days, or anything
// time.ParseDuration reads.
func Expiry(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(d, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != d {
			return 0, fmt.Errorf("%q: want a number of days such as 90d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want a positive duration such as 90d or 12h", s)
	}
	return d, nil
}
