package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/credit"
)

func codeStores(t *testing.T) map[string]credit.CodeStore {
	out := map[string]credit.CodeStore{}
	for name, cs := range creditStores(t) {
		out[name] = cs.(credit.CodeStore)
	}
	return out
}

// TestCreditCodeClaims: each org claims a code once; disabled, expired and
// used-up codes refuse new orgs but not an org that claimed already.
func TestCreditCodeClaims(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	exp := t0.Add(time.Hour)
	for name, cs := range codeStores(t) {
		t.Run(name, func(t *testing.T) {
			for _, c := range []credit.Code{
				{Code: "WELCOME", Amount: 500, MaxRedemptions: 2, CreatedAt: t0, Note: "launch"},
				{Code: "SHORT-LIVED", Amount: 100, ExpiresAt: &exp, CreatedAt: t0},
				{Code: "LEAKED", Amount: 100, CreatedAt: t0},
			} {
				if err := cs.CreateCode(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			if err := cs.CreateCode(ctx, credit.Code{Code: "WELCOME", Amount: 1, CreatedAt: t0}); !errors.Is(err, credit.ErrCodeExists) {
				t.Fatalf("second WELCOME: %v, want ErrCodeExists", err)
			}
			if _, err := cs.DisableCode(ctx, "LEAKED"); err != nil {
				t.Fatal(err)
			}
			if _, err := cs.DisableCode(ctx, "NOPE"); !errors.Is(err, credit.ErrCodeNotFound) {
				t.Fatalf("disable NOPE: %v", err)
			}
			steps := []struct {
				code, org string
				at        time.Time
				fresh     bool
				err       error
				redeemed  int64
			}{
				{"WELCOME", "acme", t0, true, nil, 1},
				{"WELCOME", "acme", t0, false, nil, 1}, // again: no error, not fresh, not counted
				{"WELCOME", "beta", t0, true, nil, 2},
				{"WELCOME", "gamma", t0, false, credit.ErrCodeUsedUp, 0},
				{"WELCOME", "beta", t0, false, nil, 2}, // claimed before the bound was reached
				{"SHORT-LIVED", "acme", exp.Add(-time.Millisecond), true, nil, 1},
				{"SHORT-LIVED", "beta", exp, false, credit.ErrCodeExpired, 0},
				{"SHORT-LIVED", "acme", exp.Add(time.Hour), false, nil, 1}, // its claim stands
				{"LEAKED", "acme", t0, false, credit.ErrCodeDisabled, 0},
				{"NOPE", "acme", t0, false, credit.ErrCodeNotFound, 0},
			}
			for i, s := range steps {
				c, fresh, err := cs.Claim(ctx, s.code, s.org, s.at)
				if !errors.Is(err, s.err) || (err != nil) != (s.err != nil) {
					t.Fatalf("step %d (%s by %s): err %v, want %v", i, s.code, s.org, err, s.err)
				}
				if err == nil && (fresh != s.fresh || c.Redeemed != s.redeemed || c.Code != s.code) {
					t.Fatalf("step %d (%s by %s): fresh %v redeemed %d code %q; want %v %d", i, s.code, s.org, fresh, c.Redeemed, c.Code, s.fresh, s.redeemed)
				}
			}
			list, err := cs.Codes(ctx)
			if err != nil || len(list) != 3 {
				t.Fatalf("Codes: %d codes (%v), want 3", len(list), err)
			}
			want := map[string]credit.Code{
				"LEAKED":      {Amount: 100, Disabled: true},
				"SHORT-LIVED": {Amount: 100, Redeemed: 1, ExpiresAt: &exp},
				"WELCOME":     {Amount: 500, MaxRedemptions: 2, Redeemed: 2, Note: "launch"},
			}
			for _, c := range list {
				w := want[c.Code]
				if c.Amount != w.Amount || c.Redeemed != w.Redeemed || c.Disabled != w.Disabled || c.Note != w.Note ||
					c.MaxRedemptions != w.MaxRedemptions || !c.CreatedAt.Equal(t0) || (c.ExpiresAt == nil) != (w.ExpiresAt == nil) ||
					(c.ExpiresAt != nil && !c.ExpiresAt.Equal(*w.ExpiresAt)) {
					t.Errorf("%s read back as %+v", c.Code, c)
				}
			}
		})
	}
}

// TestCreditCodeBoundUnderRace: 40 orgs racing for a code of 5 redemptions
// (several nodes at once) get exactly 5 claims.
func TestCreditCodeBoundUnderRace(t *testing.T) {
	ctx := context.Background()
	for name, cs := range codeStores(t) {
		t.Run(name, func(t *testing.T) {
			if err := cs.CreateCode(ctx, credit.Code{Code: "RACE", Amount: 1, MaxRedemptions: 5, CreatedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			won, usedUp := 0, 0
			for i := 0; i < 40; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, fresh, err := cs.Claim(ctx, "RACE", fmt.Sprintf("org-%d", i), time.Now())
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil && fresh:
						won++
					case errors.Is(err, credit.ErrCodeUsedUp):
						usedUp++
					default:
						t.Errorf("org-%d: fresh %v err %v", i, fresh, err)
					}
				}()
			}
			wg.Wait()
			c, err := cs.Code(ctx, "RACE")
			if won != 5 || usedUp != 35 || err != nil || c.Redeemed != 5 {
				t.Fatalf("%d claims, %d refused, count %d (%v); want 5, 35, 5", won, usedUp, c.Redeemed, err)
			}
		})
	}
}
