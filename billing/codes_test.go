package billing

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

type codeFixture struct {
	b     *Billing
	codes *store.BoltCredit
	hooks *recorder
	now   time.Time
}

// newCodeFixture: org "acme" on the prepaid plan "payg", expired (out of
// credit), org "beta" on it too, active.
func newCodeFixture(t *testing.T) *codeFixture {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	f := &codeFixture{codes: store.NewBoltCredit(st), hooks: &recorder{}, now: time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)}
	ledger, err := credit.New(credit.Config{Store: f.codes, Currency: "eur"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Currency: "eur", Plans: []PlanConfig{{Name: "payg", Prepaid: true, OveragePricePerGiB: 50, GracePeriod: time.Hour}}}
	f.b, err = New(ctx, cfg, Options{Sites: reg, Store: st, Credits: ledger, Codes: f.codes, Hooks: f.hooks,
		Metrics: prometheus.NewRegistry(), Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	for id, state := range map[string]string{"acme": sites.StateExpired, "beta": sites.StateActive} {
		if _, err := reg.CreateOrg(ctx, sites.Org{ID: id, Plan: "payg", State: state}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *codeFixture) create(t *testing.T, c credit.Code) credit.Code {
	t.Helper()
	out, err := f.b.CreateCode(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRedeemCode: a redemption grants the amount once, restores an org out
// of credit, and queues coupon.cashed (the same id when tried again).
func TestRedeemCode(t *testing.T) {
	f := newCodeFixture(t)
	ctx := context.Background()
	c := f.create(t, credit.Code{Code: " welcome-1 ", Amount: 2500, MaxRedemptions: 10})
	if c.Code != "WELCOME-1" || !c.CreatedAt.Equal(f.now) {
		t.Fatalf("created %+v: want the code upper-cased and stamped", c)
	}
	r, err := f.b.RedeemCode(ctx, "acme", "Welcome-1", ActorTenant)
	if err != nil {
		t.Fatal(err)
	}
	if r.Balance != 2500 || r.Entry.Kind != credit.Grant || r.Entry.Source != "code:WELCOME-1" || r.Entry.Actor != ActorTenant || r.Code.Redeemed != 1 {
		t.Fatalf("redemption %+v", r)
	}
	if o := f.b.opts.Sites.Snapshot().Orgs.Get("acme"); o.State != sites.StateActive {
		t.Fatalf("acme is %s after the redemption, want active (credit restored)", o.State)
	}
	cashed := f.hooks.last("coupon.cashed")
	if cashed.ID != "coupon.cashed:code:WELCOME-1:acme" || cashed.Data["source"] != "tollgate" || cashed.Data["amount"] != int64(2500) ||
		cashed.Data["currency"] != "eur" || cashed.Data["code"] != "WELCOME-1" || f.hooks.count("credit.topped_up") != 1 {
		t.Fatalf("coupon.cashed %+v, %d credit.topped_up", cashed, f.hooks.count("credit.topped_up"))
	}

	again, err := f.b.RedeemCode(ctx, "acme", "WELCOME-1", ActorTenant)
	if !errors.Is(err, credit.ErrCodeAlreadyRedeemed) || again.Balance != 2500 || again.Entry.ID != r.Entry.ID {
		t.Fatalf("second redemption: %+v, %v; want ErrCodeAlreadyRedeemed with the first entry", again, err)
	}
	if n := f.hooks.count("coupon.cashed"); n != 2 || f.hooks.last("coupon.cashed").ID != cashed.ID {
		t.Fatalf("%d coupon.cashed queued; the repeat must carry the same id", n)
	}
	if bal, _ := f.b.opts.Credits.Balance(ctx, "acme"); bal != 2500 {
		t.Fatalf("balance %d after two tries, want 2500", bal)
	}
}

// TestRedeemCodeRefusals: each refusal, and codes the operator cannot make.
func TestRedeemCodeRefusals(t *testing.T) {
	f := newCodeFixture(t)
	ctx := context.Background()
	exp := f.now.Add(time.Hour)
	f.create(t, credit.Code{Code: "ONCE", Amount: 100, MaxRedemptions: 1})
	f.create(t, credit.Code{Code: "SOON", Amount: 100, ExpiresAt: &exp})
	f.create(t, credit.Code{Code: "LEAKED", Amount: 100})
	if _, err := f.b.DisableCode(ctx, "leaked"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.RedeemCode(ctx, "beta", "ONCE", ActorTenant); err != nil {
		t.Fatal(err)
	}
	f.now = exp
	for name, tt := range map[string]struct {
		org, code string
		want      error
	}{
		"unknown org":   {"nope", "ONCE", sites.ErrNotFound},
		"unknown code":  {"acme", "NOPE", credit.ErrCodeNotFound},
		"malformed":     {"acme", "no spaces inside", credit.ErrCodeNotFound},
		"used up":       {"acme", "ONCE", credit.ErrCodeUsedUp},
		"expired":       {"acme", "SOON", credit.ErrCodeExpired},
		"disabled":      {"acme", "LEAKED", credit.ErrCodeDisabled},
		"redeemed once": {"beta", "ONCE", credit.ErrCodeAlreadyRedeemed},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := f.b.RedeemCode(ctx, tt.org, tt.code, ActorTenant); !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
	if bal, _ := f.b.opts.Credits.Balance(ctx, "acme"); bal != 0 {
		t.Fatalf("acme's balance %d after refusals only, want 0", bal)
	}
	past := f.now.Add(-time.Second)
	for name, tt := range map[string]struct {
		c    credit.Code
		want error
	}{
		"taken":          {credit.Code{Code: "once", Amount: 1}, credit.ErrCodeExists},
		"bad characters": {credit.Code{Code: "TEN%OFF", Amount: 1}, credit.ErrInvalid},
		"too short":      {credit.Code{Code: "AB", Amount: 1}, credit.ErrInvalid},
		"no amount":      {credit.Code{Code: "ZERO", Amount: 0}, credit.ErrInvalid},
		"negative bound": {credit.Code{Code: "NEG", Amount: 1, MaxRedemptions: -1}, credit.ErrInvalid},
		"expired":        {credit.Code{Code: "PAST", Amount: 1, ExpiresAt: &past}, credit.ErrInvalid},
	} {
		t.Run("create "+name, func(t *testing.T) {
			if _, err := f.b.CreateCode(ctx, tt.c); !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
}

// TestRedeemCodeCompletesClaim: a claim recorded without its grant (the
// process stopped between the two steps) is completed by the org's next
// try, counted once, even after the code expired.
func TestRedeemCodeCompletesClaim(t *testing.T) {
	f := newCodeFixture(t)
	ctx := context.Background()
	exp := f.now.Add(time.Minute)
	f.create(t, credit.Code{Code: "HALF-DONE", Amount: 700, MaxRedemptions: 1, ExpiresAt: &exp})
	if _, fresh, err := f.codes.Claim(ctx, "HALF-DONE", "acme", f.now); err != nil || !fresh {
		t.Fatalf("claim: fresh %v, %v", fresh, err)
	}
	f.now = exp.Add(time.Hour)
	r, err := f.b.RedeemCode(ctx, "acme", "HALF-DONE", ActorTenant)
	if err != nil || r.Balance != 700 || r.Code.Redeemed != 1 {
		t.Fatalf("completion: %+v, %v; want balance 700, one redemption", r, err)
	}
	if f.hooks.count("coupon.cashed") != 1 {
		t.Fatal("the completed redemption queued no coupon.cashed")
	}
}

// last is the last event of type typ queued (zero if none).
func (r *recorder) last(typ string) HookEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].Type == typ {
			return r.events[i]
		}
	}
	return HookEvent{}
}
