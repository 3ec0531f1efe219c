package admin

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/tokens"
)

// Tokens keeps the org-scoped tokens. *tokens.Tokens implements it.
type Tokens interface {
	TokenVerifier
	// Create issues a token; the secret is returned once.
	Create(ctx context.Context, s tokens.Spec) (tokens.Token, string, error)
	// List returns the org's tokens, without secrets.
	List(ctx context.Context, org string) ([]tokens.Token, error)
	// Revoke deletes the org's token id (tokens.ErrNotFound when the org
	// has none of that id).
	Revoke(ctx context.Context, org, id string) error
}

type (
	// TokenCreate is the body of POST /v1/orgs/{id}/tokens.
	TokenCreate struct {
		Name   string         `json:"name"`
		Scopes []tokens.Scope `json:"scopes"`
		// ExpiresAt, when set, is when the token stops working.
		ExpiresAt *time.Time `json:"expires_at,omitempty"`
	}
	// TokenCreated is the answer of POST /v1/orgs/{id}/tokens: the record
	// and, this once, the secret.
	TokenCreated struct {
		tokens.Token
		Secret string `json:"secret"`
	}
	// TokenList is GET /v1/orgs/{id}/tokens, oldest first.
	TokenList struct {
		Tokens []tokens.Token `json:"tokens"`
	}
)

func (s *Server) tokenStore() (Tokens, error) {
	if s.tokens == nil {
		return nil, fmt.Errorf("%w: org tokens are not configured", errNotConfig)
	}
	return s.tokens, nil
}

// createToken issues a token. The operator grants any scopes; a tenant's
// admin token grants at most its own, and no later expiry than its own.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.tokenStore()
	if err != nil {
		return err
	}
	var in TokenCreate
	if err := s.decode(w, r, &in); err != nil {
		return err
	}
	org := r.PathValue("id")
	if s.reg.Snapshot().Orgs.Get(org) == nil {
		return fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	spec := tokens.Spec{Org: org, Name: in.Name, Scopes: in.Scopes, CreatedBy: tokens.CreatorOperator}
	if in.ExpiresAt != nil {
		spec.ExpiresAt = *in.ExpiresAt
	}
	if t := tenantOf(r); t != nil {
		spec.CreatedBy = "token:" + t.ID
		if !tokens.Covers(t.Scopes, in.Scopes) {
			return fmt.Errorf("%w: scopes: a token grants at most its creator's (%s)", errInsufficientScope, scopeList(t.Scopes))
		}
		if t.ExpiresAt != nil && (spec.ExpiresAt.IsZero() || spec.ExpiresAt.After(*t.ExpiresAt)) {
			spec.ExpiresAt = *t.ExpiresAt
		}
	}
	tok, secret, err := ts.Create(r.Context(), spec)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, TokenCreated{Token: tok, Secret: secret})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.tokenStore()
	if err != nil {
		return err
	}
	org := r.PathValue("id")
	if s.reg.Snapshot().Orgs.Get(org) == nil {
		return fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	list, err := ts.List(r.Context(), org)
	if err != nil {
		return err
	}
	if list == nil {
		list = []tokens.Token{}
	}
	writeJSON(w, http.StatusOK, TokenList{Tokens: list})
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.tokenStore()
	if err != nil {
		return err
	}
	if err := ts.Revoke(r.Context(), r.PathValue("id"), r.PathValue("token_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeOrgTokens deletes the tokens of a deleted org, so that an org
// created again under its id does not inherit them.
func (s *Server) revokeOrgTokens(ctx context.Context, org string) error {
	if s.tokens == nil {
		return nil
	}
	list, err := s.tokens.List(ctx, org)
	for _, t := range list {
		if err == nil {
			err = s.tokens.Revoke(ctx, org, t.ID)
		}
	}
	return err
}

// CreateToken issues a token for org; the answer holds its secret.
func (c *Client) CreateToken(ctx context.Context, org string, in TokenCreate) (TokenCreated, error) {
	var out TokenCreated
	_, err := c.do(ctx, http.MethodPost, "/v1/orgs/"+url.PathEscape(org)+"/tokens", in, &out)
	return out, err
}

// ListTokens lists org's tokens.
func (c *Client) ListTokens(ctx context.Context, org string) ([]tokens.Token, error) {
	var out TokenList
	_, err := c.do(ctx, http.MethodGet, "/v1/orgs/"+url.PathEscape(org)+"/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes org's token id.
func (c *Client) RevokeToken(ctx context.Context, org, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/orgs/"+url.PathEscape(org)+"/tokens/"+url.PathEscape(id), nil, nil)
	return err
}

func tokenCreateCmd(fs *flag.FlagSet) runFunc {
	scopes := fs.String("scope", "", "comma-separated scopes: read, write, billing, admin (required)")
	name := fs.String("name", "", "what the token is for, e.g. ci (required)")
	expires := fs.String("expires", "", "lifetime, e.g. 90d or 12h (default: never expires)")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		in := TokenCreate{Name: *name, Scopes: tokens.ParseScopes(*scopes)}
		if *expires != "" {
			d, err := tokens.Expiry(*expires)
			if err != nil {
				return output{}, usagef("--expires: %v", err)
			}
			at := time.Now().Add(d).UTC().Truncate(time.Second)
			in.ExpiresAt = &at
		}
		t, err := c.CreateToken(ctx, args[0], in)
		o := tokenOutput(t, t.Token)
		o.msg = "secret (shown once, store it now): " + t.Secret
		return o, err
	}
}

func tokenListCmd(ctx context.Context, c *Client, args []string) (output, error) {
	list, err := c.ListTokens(ctx, args[0])
	return tokenOutput(list, list...), err
}

func tokenRevokeCmd(ctx context.Context, c *Client, args []string) (output, error) {
	return output{msg: "revoked token " + args[1]}, c.RevokeToken(ctx, args[0], args[1])
}

func tokenOutput(value any, ts ...tokens.Token) output {
	o := output{value: value, header: []string{"ID", "NAME", "SCOPES", "CREATED-BY", "CREATED", "EXPIRES", "LAST-USED"}}
	for _, t := range ts {
		exp, used := "never", "never"
		if t.ExpiresAt != nil {
			exp = stamp(*t.ExpiresAt)
		}
		if t.LastUsedAt != nil {
			used = stamp(*t.LastUsedAt)
		}
		o.rows = append(o.rows, []string{t.ID, t.Name, strings.Trim(scopeList(t.Scopes), ","), t.CreatedBy, stamp(t.CreatedAt), exp, used})
	}
	return o
}
