package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/sites"
)

// Copying prepaid credit between stores (migrate, backup, restore): the
// ledgers of every org, then the credit codes with who redeemed them.

// copyLedgers copies the prepaid credit ledger of every org that orgs
// (a registry store) lists from src into dst, entry by entry: an entry
// whose source dst holds already is not added twice, so copying into a
// ledger that has newer entries merges. With sameBalance, each org's
// balance must then be the same on both sides (a copy into an empty dst).
func copyLedgers(ctx context.Context, orgs sites.Store, src, dst credit.Store, sameBalance bool) (entries, withCredit int, err error) {
	var ids []string
	if err := orgs.Scan(ctx, "orgs", func(k, _ []byte) error {
		ids = append(ids, string(k))
		return nil
	}); err != nil {
		return 0, 0, err
	}
	for _, org := range ids {
		es, err := src.Entries(ctx, org)
		if err != nil {
			return entries, withCredit, fmt.Errorf("%s: %w", org, err)
		}
		if len(es) == 0 {
			continue
		}
		for _, e := range es {
			if _, _, _, err := dst.Append(ctx, e); err != nil {
				return entries, withCredit, fmt.Errorf("%s: entry %s: %w", org, e.ID, err)
			}
		}
		if sameBalance {
			want, err := src.Balance(ctx, org)
			if err != nil {
				return entries, withCredit, err
			}
			if got, err := dst.Balance(ctx, org); err != nil || got != want {
				return entries, withCredit, fmt.Errorf("%s: balance %d before the copy but %d after it (%v)", org, want, got, err)
			}
		}
		entries += len(es)
		withCredit++
	}
	return entries, withCredit, nil
}

// copyCredits copies the ledgers (copyLedgers) and then every credit code
// (copyCodes).
func copyCredits(ctx context.Context, orgs sites.Store, src, dst creditStores, sameBalance bool) (entries, withCredit int, err error) {
	if entries, withCredit, err = copyLedgers(ctx, orgs, src, dst, sameBalance); err != nil {
		return entries, withCredit, err
	}
	if _, err := copyCodes(ctx, src, dst); err != nil {
		return entries, withCredit, fmt.Errorf("credit codes: %w", err)
	}
	return entries, withCredit, nil
}

// copyCodes copies every credit code of src into dst with its redemptions:
// the code is created enabled (kept when dst has it), each org's claim is
// made again at its time, in time order (so bounds and expiry pass as they
// did), and then a withdrawn code is withdrawn. A claim dst refuses (a code
// dst had already, used up by other orgs there) is skipped: the ledger
// entry of that redemption was copied with the ledgers, which is what the
// org's balance rests on.
func copyCodes(ctx context.Context, src, dst credit.CodeStore) (int, error) {
	codes, err := src.Codes(ctx)
	if err != nil {
		return 0, err
	}
	for _, c := range codes {
		create := c
		create.Disabled = false
		if err := dst.CreateCode(ctx, create); err != nil && !errors.Is(err, credit.ErrCodeExists) {
			return 0, fmt.Errorf("%s: %w", c.Code, err)
		}
		who, err := src.Redeemers(ctx, c.Code)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", c.Code, err)
		}
		orgs := make([]string, 0, len(who))
		for org := range who {
			orgs = append(orgs, org)
		}
		slices.SortFunc(orgs, func(a, b string) int { return who[a].Compare(who[b]) })
		for _, org := range orgs {
			_, _, err := dst.Claim(ctx, c.Code, org, who[org])
			if err != nil && !errors.Is(err, credit.ErrCodeUsedUp) && !errors.Is(err, credit.ErrCodeDisabled) && !errors.Is(err, credit.ErrCodeExpired) {
				return 0, fmt.Errorf("%s: claim of %s: %w", c.Code, org, err)
			}
		}
		if c.Disabled {
			if _, err := dst.DisableCode(ctx, c.Code); err != nil {
				return 0, fmt.Errorf("%s: %w", c.Code, err)
			}
		}
	}
	return len(codes), nil
}
