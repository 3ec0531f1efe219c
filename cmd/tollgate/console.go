package main

import (
	"context"
	"errors"
	"net/http"

	"github.com/tollgate-edge/tollgate/console"
	"github.com/tollgate-edge/tollgate/tokens"
)

// tenantHandler is what the tenant API listener ([server] api) serves: the
// tenant console at /console/ and the tenant API (api) for the rest. Each
// collaborator of the console that this node lacks (metering off, no
// billing, no Stripe) is left out, and the console says so on its pages;
// without top-ups the credit page has no top-up form.
func (n *node) tenantHandler(api http.Handler) (http.Handler, error) {
	opts := console.Options{Tokens: consoleTokens{n.tokens}, Registry: n.reg, Logger: n.log}
	if u, ok := n.admin.SiteUsage.(console.Usage); ok {
		opts.Usage = u
	}
	if a, ok := n.admin.Accounts.(console.Accounts); ok {
		opts.Accounts = a
	}
	if n.admin.Payments != nil {
		opts.Payments = n.admin.Payments
	}
	if n.meter != nil {
		opts.Storage = n.meter
	}
	if v, ok := n.admin.DomainProof.(console.Verifier); ok {
		opts.Verifier = v
	}
	if cr, ok := n.admin.Credits.(console.Credits); ok {
		opts.Credits = cr
	}
	if t, ok := n.admin.TopUps.(console.TopUps); ok {
		opts.TopUps = t
	}
	if cc, ok := n.admin.CreditCodes.(console.Codes); ok {
		opts.Codes = cc
	}
	con, err := console.New(n.cfg.Console, opts)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/console/", con)
	mux.Handle("/", api)
	return mux, nil
}

// consoleTokens signs tenants in to the console with their org tokens. The
// token store does not say whether a refused token was unknown, revoked
// or expired (ErrUnauthorized), so the console says "not valid".
type consoleTokens struct{ ts *tokens.Tokens }

func (c consoleTokens) Tenant(ctx context.Context, secret string) (console.Tenant, error) {
	t, err := c.ts.Verify(ctx, secret)
	if errors.Is(err, tokens.ErrUnauthorized) {
		return console.Tenant{}, console.ErrTokenUnknown
	}
	if err != nil {
		return console.Tenant{}, err
	}
	scopes := make([]string, len(t.Scopes))
	for i, s := range t.Scopes {
		scopes[i] = string(s)
	}
	return console.Tenant{Org: t.Org, Scopes: scopes}, nil
}
