package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/sites"
)

// Redeemable credit codes (credit.Code): the operator creates them, an org
// redeems one for a grant of its amount (see package credit for the two
// steps and why a redemption cut short completes on its next try). A
// redemption appends the grant through Credit, so it fires
// credit.topped_up and restores an org that was out of credit, and then
// queues coupon.cashed with the id "coupon.cashed:code:CODE:ORG": the same
// id however often the org tries again, so a redemption whose hook was not
// queued (the process stopped after the grant) queues it on the next try,
// and receivers deduplicate on the id (at least once).

// ActorTenant writes what a tenant asked for with its own token.
const ActorTenant = "tenant"

// A tenant (ActorTenant) may try codes for its org CodeTriesBurst times at
// once, then one more every 1/CodeTriesPerSecond seconds, on each node,
// whether the code was redeemed or refused (ErrCodeTries): a stranger
// holding a token guesses at most 8,640 codes a day and node, so codes of 8
// random characters or more are not found by guessing. The operator's
// redemptions are not limited.
const (
	CodeTriesPerSecond = 0.1
	CodeTriesBurst     = 10
)

// ErrCodeTries: the org's tenant tried more codes than CodeTriesBurst in a
// short time; ratelimit.RetryAfter(CodeTriesPerSecond) seconds bring a try
// back.
var ErrCodeTries = errors.New("too many credit codes tried for this org")

// CodeRedemption is the outcome of RedeemCode.
type CodeRedemption struct {
	Code    credit.Code  `json:"code"`
	Entry   credit.Entry `json:"entry"`
	Balance int64        `json:"balance"`
}

// CreateCode checks c (credit.ErrInvalid), normalizes its code, stamps it
// and adds it (credit.ErrCodeExists).
func (b *Billing) CreateCode(ctx context.Context, c credit.Code) (credit.Code, error) {
	if b.opts.Codes == nil {
		return credit.Code{}, ErrNoLedger
	}
	now := b.now()
	c.Code, c.Redeemed, c.Disabled, c.CreatedAt = credit.NormalizeCode(c.Code), 0, false, now.UTC()
	if c.ExpiresAt != nil {
		at := c.ExpiresAt.UTC()
		c.ExpiresAt = &at
	}
	if err := c.Validate(now); err != nil {
		return credit.Code{}, fmt.Errorf("%w: %w", credit.ErrInvalid, err)
	}
	if err := b.opts.Codes.CreateCode(ctx, c); err != nil {
		return credit.Code{}, err
	}
	return c, nil
}

// CreditCodes lists every code with its redemptions.
func (b *Billing) CreditCodes(ctx context.Context) ([]credit.Code, error) {
	if b.opts.Codes == nil {
		return nil, ErrNoLedger
	}
	return b.opts.Codes.Codes(ctx)
}

// DisableCode withdraws a code (credit.ErrCodeNotFound).
func (b *Billing) DisableCode(ctx context.Context, code string) (credit.Code, error) {
	if b.opts.Codes == nil {
		return credit.Code{}, ErrNoLedger
	}
	code = credit.NormalizeCode(code)
	if !credit.ValidCode(code) {
		return credit.Code{}, fmt.Errorf("%w: %q", credit.ErrCodeNotFound, code)
	}
	return b.opts.Codes.DisableCode(ctx, code)
}

// RedeemCode grants org the code's amount, once per org. Errors:
// sites.ErrNotFound (org), ErrCodeTries (a tenant's), credit.ErrCodeNotFound
// (also for a malformed code), ErrCodeDisabled, ErrCodeExpired,
// ErrCodeUsedUp, ErrCodeAlreadyRedeemed (with the redemption's entry),
// ErrNoLedger.
func (b *Billing) RedeemCode(ctx context.Context, org, code, actor string) (CodeRedemption, error) {
	if b.opts.Codes == nil || b.opts.Credits == nil {
		return CodeRedemption{}, ErrNoLedger
	}
	if !b.OrgExists(org) {
		return CodeRedemption{}, fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	if actor == ActorTenant && !b.codeTries.Allow(b.codeKeys.String(org), time.Now()) {
		return CodeRedemption{}, ErrCodeTries
	}
	code = credit.NormalizeCode(code)
	if !credit.ValidCode(code) {
		return CodeRedemption{}, fmt.Errorf("%w: %q", credit.ErrCodeNotFound, code)
	}
	now := b.now()
	c, _, err := b.opts.Codes.Claim(ctx, code, org, now)
	if err != nil {
		return CodeRedemption{}, err
	}
	e := credit.Entry{Org: org, Amount: c.Amount, Kind: credit.Grant, Source: credit.Source(code), Actor: actor,
		At: now, Note: "credit code " + code}
	stored, appended, bal, err := b.Credit(ctx, e)
	if err != nil {
		return CodeRedemption{}, err
	}
	r := CodeRedemption{Code: c, Entry: stored, Balance: bal}
	b.emit(ctx, HookEvent{ID: "coupon.cashed:code:" + code + ":" + org, Type: "coupon.cashed", Org: org, At: stored.At,
		Data: map[string]any{"code": code, "source": "tollgate", "amount": c.Amount, "currency": b.cfg.Currency,
			"entry": stored.ID, "balance": bal, "redeemed": c.Redeemed, "max_redemptions": c.MaxRedemptions}})
	if !appended {
		return r, fmt.Errorf("%w: %s", credit.ErrCodeAlreadyRedeemed, code)
	}
	return r, nil
}
