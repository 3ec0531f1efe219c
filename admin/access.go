package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/tokens"
)

// Who may use a /v1 route, and how a tenant's request is confined to its
// org.
//
// A request carries the operator's admin token (private listener only), an
// org-scoped token ("tgt_…", package tokens), or, on the public routes
// (the plan catalog), none. A tenant's request is checked in this order:
//  1. the route is the operator's only: 404 ROUTE_NOT_FOUND, as a path
//     that does not exist;
//  2. the token lacks the route's scope: 403 INSUFFICIENT_SCOPE, whatever
//     the target (so the answer says nothing about it);
//  3. the org the request addresses (in the path, the query, or owning the
//     site or domain named) is not the token's: 404 NOT_FOUND with the very
//     problem a missing org, site or domain gets, so no answer tells another
//     org's records from ones that do not exist.

// rule is the access rule of one /v1 route.
type rule struct {
	// scope is the scope a tenant's token needs; "" with public false:
	// the operator's route only.
	scope tokens.Scope
	// public: answered without a token too, and to any valid token.
	public bool
	// owner returns the org that owns what the request names, and the
	// error a missing one is answered with; nil: the route names no org.
	owner func(r *http.Request, snap *sites.Snapshot) (org string, notFound error)
}

// Route rules.
var (
	operatorOnly = rule{}
	publicRoute  = rule{public: true}
)

func tenant(scope tokens.Scope, owner func(*http.Request, *sites.Snapshot) (string, error)) rule {
	return rule{scope: scope, owner: owner}
}

// TokenVerifier checks an org-scoped token. *tokens.Tokens implements it.
type TokenVerifier interface {
	// Verify returns the token secret is, tokens.ErrUnauthorized when it is
	// not valid (malformed, unknown, revoked, expired), or another error
	// when the store could not be asked.
	Verify(ctx context.Context, secret string) (tokens.Token, error)
}

// caller is who sent an authenticated request.
type caller struct {
	operator bool
	token    tokens.Token // the tenant's token, when not operator
}

type callerKey struct{}

// callerOf is the caller of r; nil for an anonymous request (public route).
func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(callerKey{}).(*caller)
	return c
}

// tenantOf is the token of a tenant's request; nil for the operator or
// anonymous.
func tenantOf(r *http.Request) *tokens.Token {
	if c := callerOf(r); c != nil && !c.operator {
		return &c.token
	}
	return nil
}

var errInsufficientScope = errors.New("the token lacks the scope this route needs")

// authenticate reads the bearer token of r. c is nil for a request
// without one. api: the public API listener, where the admin token is not
// accepted. sum is the SHA-256 of the token sent (the rate limit's key).
func (s *Server) authenticate(r *http.Request, api bool) (c *caller, sum [sha256.Size]byte, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, sum, nil
	}
	scheme, tok, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return nil, sum, errUnauthorized
	}
	tok = strings.TrimSpace(tok)
	sum = sha256.Sum256([]byte(tok))
	if tokens.IsToken(tok) && s.tokens != nil {
		t, err := s.tokens.Verify(r.Context(), tok)
		switch {
		case errors.Is(err, tokens.ErrUnauthorized):
			return nil, sum, errUnauthorized
		case err != nil:
			return nil, sum, err
		case s.reg.Snapshot().Orgs.Get(t.Org) == nil:
			return nil, sum, errUnauthorized // the org is gone
		}
		return &caller{token: t}, sum, nil
	}
	// Both sides hashed: the comparison does not reveal the length either.
	if !api && subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1 {
		return &caller{operator: true}, sum, nil
	}
	return nil, sum, errUnauthorized
}

// confine applies a's rule to a tenant's request (the steps above).
func (s *Server) confine(r *http.Request, t *tokens.Token, a rule) error {
	if a.public {
		return nil
	}
	if a.scope == "" {
		return errNoRoute
	}
	if !t.Has(a.scope) {
		return fmt.Errorf("%w: %s (the token has %s)", errInsufficientScope, a.scope, scopeList(t.Scopes))
	}
	if a.owner == nil {
		return nil
	}
	org, notFound := a.owner(r, s.reg.Snapshot())
	if org == "" || org != t.Org {
		return notFound
	}
	return nil
}

func scopeList(ss []tokens.Scope) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return strings.Join(out, ",")
}

// orgInPath: the org is {id}.
func orgInPath(r *http.Request, snap *sites.Snapshot) (string, error) {
	id := r.PathValue("id")
	if snap.Orgs.Get(id) == nil {
		id = ""
	}
	return id, fmt.Errorf("org %q: %w", r.PathValue("id"), sites.ErrNotFound)
}

// siteInPath: the org owns the site {id}.
func siteInPath(r *http.Request, snap *sites.Snapshot) (string, error) {
	id := r.PathValue("id")
	notFound := fmt.Errorf("site %q: %w", id, sites.ErrNotFound)
	if st := snap.Sites.Get(id); st != nil {
		return st.Org, notFound
	}
	return "", notFound
}

// domainInPath: the org owns the site the domain {domain} is attached to.
func domainInPath(r *http.Request, snap *sites.Snapshot) (string, error) {
	host, err := sites.NormalizeDomain(r.PathValue("domain"))
	if err != nil {
		return "", fmt.Errorf("%w: domain: %w", sites.ErrInvalid, err)
	}
	notFound := fmt.Errorf("domain %q: %w", host, sites.ErrNotFound)
	if d := snap.Domains.Get(host); d != nil {
		if st := snap.Sites.Get(d.Site); st != nil {
			return st.Org, notFound
		}
	}
	return "", notFound
}

// orgInQuery: the org is ?org= (GET /v1/usage), which a tenant must give.
func orgInQuery(r *http.Request, snap *sites.Snapshot) (string, error) {
	org := r.URL.Query().Get("org")
	if org == "" {
		return "", badRequest("org=ID is required with an org token (the every-org totals are the operator's)")
	}
	if snap.Orgs.Get(org) == nil {
		return "", fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	return org, fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
}
