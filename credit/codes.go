package credit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Redeemable credit codes, for operators who bill with credit only (no
// Stripe): the operator creates a code worth Amount; an org that redeems it
// gets a grant of Amount, once per org, while the code is enabled, not
// expired and redeemed fewer than MaxRedemptions times in all.
//
// A redemption takes two atomic steps, in this order: Claim records the
// org as a redeemer of the code (in the code's own record, so the bound on
// redemptions holds across nodes), then the grant is appended to the org's
// ledger with source "code:CODE". A process that stops between the two
// leaves a claim without its grant; the org's next redemption of the same
// code finds its claim and appends the grant then (no check applies to a
// claim already made), so nothing is lost and nothing counts twice.

// Code is a redeemable credit code and its redemptions so far.
type Code struct {
	// Code is what a tenant types: 4-64 of A-Z, 0-9, '-' and '_'. Codes
	// are case-insensitive: NormalizeCode upper-cases them.
	Code string `json:"code"`
	// Amount is the credit one redemption grants, in minor units (> 0).
	Amount int64 `json:"amount"`
	// MaxRedemptions bounds the redemptions of all orgs together; 0: no
	// bound.
	MaxRedemptions int64 `json:"max_redemptions"`
	// Redeemed is how many orgs have redeemed the code (set by the store).
	Redeemed int64 `json:"redeemed"`
	// ExpiresAt is when the code stops being accepted; nil: never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Disabled codes are refused (an operator's withdrawal of a code that
	// leaked); the record stays for its history.
	Disabled  bool      `json:"disabled"`
	Note      string    `json:"note,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Errors of codes. Redeem and Claim wrap them.
var (
	ErrCodeExists          = errors.New("credit code exists")
	ErrCodeNotFound        = errors.New("no such credit code")
	ErrCodeDisabled        = errors.New("credit code disabled")
	ErrCodeExpired         = errors.New("credit code expired")
	ErrCodeUsedUp          = errors.New("credit code redeemed as often as it may be")
	ErrCodeAlreadyRedeemed = errors.New("credit code already redeemed by this org")
)

// NormalizeCode is the canonical form of a code a person typed: trimmed,
// upper case.
func NormalizeCode(s string) string { return strings.ToUpper(strings.TrimSpace(s)) }

// ValidCode reports whether s, normalized, is a well-formed code.
func ValidCode(s string) bool {
	if len(s) < 4 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Validate reports every bad field of a code about to be created at now.
func (c Code) Validate(now time.Time) error {
	var errs []error
	if !ValidCode(c.Code) {
		errs = append(errs, fmt.Errorf("code: %q must be 4-64 of A-Z, 0-9, '-' and '_'", c.Code))
	}
	if c.Amount <= 0 || c.Amount > MaxAmount {
		errs = append(errs, fmt.Errorf("amount: %d must be above 0 and at most %d (minor units)", c.Amount, int64(MaxAmount)))
	}
	if c.MaxRedemptions < 0 {
		errs = append(errs, fmt.Errorf("max_redemptions: %d must be 0 (no bound) or more", c.MaxRedemptions))
	}
	if c.ExpiresAt != nil && !c.ExpiresAt.After(now) {
		errs = append(errs, fmt.Errorf("expires_at: %s is not in the future", c.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	if len(c.Note) > 500 {
		errs = append(errs, errors.New("note: at most 500 bytes"))
	}
	return errors.Join(errs...)
}

// Source is the ledger source of code's grant to an org.
func Source(code string) string { return "code:" + code }

// CodeStore keeps the codes and who redeemed them. It must be safe for
// concurrent use by several processes sharing it. *store.BoltCredit and
// *store.RedisCredit implement it.
type CodeStore interface {
	// CreateCode adds c with no redemptions (ErrCodeExists if its code is
	// taken, enabled or not).
	CreateCode(ctx context.Context, c Code) error
	// Code is the code named (ErrCodeNotFound).
	Code(ctx context.Context, code string) (Code, error)
	// Codes lists every code, by code.
	Codes(ctx context.Context) ([]Code, error)
	// DisableCode disables the code (ErrCodeNotFound) and returns it.
	DisableCode(ctx context.Context, code string) (Code, error)
	// Claim records org as a redeemer of code in one atomic step with the
	// checks: ErrCodeNotFound, ErrCodeDisabled, ErrCodeExpired (at or
	// after ExpiresAt, by now), ErrCodeUsedUp. An org recorded already is
	// no error and passes no check: fresh is false.
	Claim(ctx context.Context, code, org string, now time.Time) (c Code, fresh bool, err error)
	// Redeemers lists the orgs that claimed code and when (ErrCodeNotFound).
	Redeemers(ctx context.Context, code string) (map[string]time.Time, error)
}

// CheckClaim is the checks of Claim on a code not yet claimed by the org,
// for stores that hold the code's fields in Go.
func CheckClaim(c Code, now time.Time) error {
	switch {
	case c.Disabled:
		return ErrCodeDisabled
	case c.ExpiresAt != nil && !now.Before(*c.ExpiresAt):
		return ErrCodeExpired
	case c.MaxRedemptions > 0 && c.Redeemed >= c.MaxRedemptions:
		return ErrCodeUsedUp
	}
	return nil
}
