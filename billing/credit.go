package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/internal/pace"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// Prepaid credit. An org is credit-billed when its plan is prepaid
// (sites.Plan.Prepaid): a Stripe subscription moves an org to the plan it
// pays for, so an org on a prepaid plan has no paying subscription. Each
// pass draws, for every credit-billed org, each completed hour (ended at
// least [billing] credit_settle ago) from its ledger, one entry of kind
// usage per hour with a charge, source "usage:ORG:YYYYMMDDHH": however many
// nodes draw the same org, the ledger keeps one entry per hour.
//
// An hour's charge is the growth, over that hour, of the period's priced
// usage: egress of the period beyond the plan's egress_bytes times
// overage_price_per_gib, plus the byte-seconds stored beyond storage_bytes
// in each hour times storage_price_per_gib_month ÷ (GiB × 30 days), each
// rounded down over the period so far. The charges of a period therefore
// sum exactly to its priced usage. The plan of the pass prices the hours;
// an org that became prepaid mid-period has the period's earlier hours
// priced too.
//
// After every appended entry: a draw that takes the balance to
// credit_low_threshold or below fires credit.low, to zero or below
// credit.exhausted and moves an active or trialing org to past_due (its
// plan's grace, then expired: 402); a positive entry fires
// credit.topped_up and, with a balance above zero, restores a past-due or
// expired org (active). Only the node whose append wrote the entry reacts.

// Credits is the prepaid credit ledger. *credit.Ledger implements it.
type Credits interface {
	// Append adds e to its org's ledger unless its source is there already
	// (appended false); balance is the balance after.
	Append(ctx context.Context, e credit.Entry) (stored credit.Entry, appended bool, balance int64, err error)
	// Balance is the org's balance.
	Balance(ctx context.Context, org string) (int64, error)
	// Entries lists the org's entries, oldest first, with the balance after each.
	Entries(ctx context.Context, org string) ([]credit.Entry, error)
}

// ErrNoLedger: the node has no credit ledger.
var ErrNoLedger = errors.New("no prepaid credit ledger is configured")

// Causes of the state changes credit makes.
const (
	causeCreditExhausted = "prepaid credit exhausted"
	causeCreditTopUp     = "prepaid credit topped up"
)

// Sizes prices are per.
const (
	gib         = 1 << 30
	monthSecond = 30 * 24 * 3600
)

// Credit appends e to the org's ledger and reacts to the new balance (see
// above). A source already in the ledger changes nothing (appended false,
// the stored entry). Errors: sites.ErrNotFound for an unknown org,
// credit.ErrInvalid, ErrNoLedger.
func (b *Billing) Credit(ctx context.Context, e credit.Entry) (credit.Entry, bool, int64, error) {
	if b.opts.Credits == nil {
		return credit.Entry{}, false, 0, ErrNoLedger
	}
	if !b.OrgExists(e.Org) {
		return credit.Entry{}, false, 0, fmt.Errorf("org %q: %w", e.Org, sites.ErrNotFound)
	}
	if e.At.IsZero() {
		e.At = b.now()
	}
	stored, appended, balance, err := b.opts.Credits.Append(ctx, e)
	if err != nil || !appended {
		return stored, appended, balance, err
	}
	b.credited(ctx, stored, balance)
	return stored, true, balance, nil
}

// CreditHistory is the org's balance and entries, oldest first.
func (b *Billing) CreditHistory(ctx context.Context, org string) (int64, []credit.Entry, error) {
	if b.opts.Credits == nil {
		return 0, nil, ErrNoLedger
	}
	if !b.OrgExists(org) {
		return 0, nil, fmt.Errorf("org %q: %w", org, sites.ErrNotFound)
	}
	es, err := b.opts.Credits.Entries(ctx, org)
	if err != nil {
		return 0, nil, err
	}
	bal, err := b.opts.Credits.Balance(ctx, org)
	return bal, es, err
}

// Currency is [billing] currency, the currency of credit amounts.
func (b *Billing) Currency() string { return b.cfg.Currency }

// credited fires the hooks of an appended entry and moves the org's state.
func (b *Billing) credited(ctx context.Context, e credit.Entry, balance int64) {
	before := balance - e.Amount
	data := map[string]any{"entry": e.ID, "kind": e.Kind, "amount": e.Amount, "balance": balance,
		"currency": b.cfg.Currency, "source": e.Source}
	hook := func(typ string) {
		b.emit(ctx, HookEvent{ID: typ + ":" + e.Org + ":" + e.ID, Type: typ, Org: e.Org, At: e.At, Data: data})
	}
	if e.Amount > 0 {
		hook("credit.topped_up")
		if balance > 0 {
			b.creditState(ctx, e.Org, balance, true)
		}
		return
	}
	if th := b.cfg.CreditLowThreshold; before > th && balance <= th {
		data["threshold"] = th
		hook("credit.low")
	}
	if before > 0 && balance <= 0 {
		hook("credit.exhausted")
	}
	b.creditState(ctx, e.Org, balance, false)
}

// creditState moves a credit-billed org to past_due at a balance of zero or
// less and, with restore, a past-due or expired one back to active above
// zero.
func (b *Billing) creditState(ctx context.Context, org string, balance int64, restore bool) {
	snap := b.opts.Sites.Snapshot()
	o := snap.Orgs.Get(org)
	if o == nil {
		return
	}
	if p := snap.Plans.Get(o.Plan); p == nil || !p.Prepaid {
		return
	}
	var c Change
	switch {
	case balance <= 0 && (o.State == sites.StateActive || o.State == sites.StateTrialing):
		c = Change{State: sites.StatePastDue, Cause: causeCreditExhausted}
	case restore && balance > 0 && (o.State == sites.StatePastDue || o.State == sites.StateExpired):
		c = Change{State: sites.StateActive, Cause: causeCreditTopUp}
	default:
		return
	}
	c.Actor, c.Ref = ActorBilling, fmt.Sprintf("balance %d %s", balance, b.cfg.Currency)
	if _, err := b.Apply(ctx, org, c); err != nil && !errors.Is(err, ErrTransition) {
		b.log.Error("credit: org state not changed", slog.String("org", org), slog.String("to", c.State), slog.Any("err", err))
	}
}

// drawCredits draws each credit-billed org's completed hours not drawn yet
// by this process (after a start: the previous and the current period,
// whose hours drawn already are no-ops), then checks its balance.
func (b *Billing) drawCredits(ctx context.Context, snap *sites.Snapshot, now time.Time) {
	if b.opts.Credits == nil || b.opts.Usage == nil {
		return
	}
	b.creditMu.Lock()
	defer b.creditMu.Unlock()
	end := now.Add(-b.cfg.CreditSettle).Truncate(time.Hour) // hours before end are complete
	var pacer pace.Pacer                                    // a million orgs: give the core back now and then
	for id, o := range snap.Orgs.All() {
		pacer.Step()
		p := snap.Plans.Get(o.Plan)
		if p == nil || !p.Prepaid {
			continue
		}
		from, ok := b.drawn[id]
		if ok && !from.Before(end) {
			continue
		}
		if !ok {
			cur, _, _ := meter.PeriodBounds(meter.Period(end.Add(-time.Hour)))
			from, _, _ = meter.PeriodBounds(meter.Period(cur.Add(-time.Hour)))
		}
		if err := b.drawOrg(ctx, id, p, from, end); err != nil {
			b.log.Warn("credit: usage not drawn; next pass tries again", slog.String("org", id), slog.Any("err", err))
			continue
		}
		b.drawn[id] = end
		bal, err := b.opts.Credits.Balance(ctx, id)
		if err == nil {
			b.creditState(ctx, id, bal, false) // restoring is a top-up's
		}
	}
}

// drawOrg draws the hours of [from, end), period by period.
func (b *Billing) drawOrg(ctx context.Context, org string, p *sites.Plan, from, end time.Time) error {
	for start, _, _ := meter.PeriodBounds(meter.Period(from)); start.Before(end); start = start.AddDate(0, 1, 0) {
		to := start.AddDate(0, 1, 0)
		if to.After(end) {
			to = end
		}
		pts, err := b.opts.Usage.Hourly(ctx, org, start, to)
		if err != nil {
			return err
		}
		for _, c := range HourCharges(p, pts) {
			if c.Hour.Before(from) {
				continue
			}
			e := credit.Entry{Org: org, Amount: -c.Amount, Kind: credit.Usage, Actor: ActorBilling,
				Source: UsageSource(org, c.Hour), At: c.Hour.Add(time.Hour),
				Note: fmt.Sprintf("egress %d B, stored %d B·s beyond the plan %s", c.EgressOver, c.StorageOver, p.Name)}
			if _, _, _, err := b.Credit(ctx, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// UsageSource is the source of the entry drawing org's hour.
func UsageSource(org string, hour time.Time) string {
	return "usage:" + org + ":" + hour.UTC().Format("2006010215")
}

// HourCharge is one hour's charge of a prepaid plan.
type HourCharge struct {
	Hour        time.Time // start
	Amount      int64     // minor units, > 0
	EgressOver  int64     // egress of the hour beyond the period's included egress
	StorageOver int64     // byte-seconds of the hour beyond the included storage
}

// HourCharges prices the hours of one period (pts: oldest first, from the
// period's start) on plan p; hours without a charge are left out. The
// amounts sum to floor(egress over × overage price ÷ GiB) + floor(storage
// byte-seconds over × storage price ÷ (GiB × 30 days)) of the period.
func HourCharges(p *sites.Plan, pts []meter.Point) []HourCharge {
	var out []HourCharge
	var egress, egressOver, storageOver, charged int64
	for _, pt := range pts {
		egress += pt.EgressBytes
		over := max(0, egress-p.EgressBytes)
		hourEgress := over - egressOver
		egressOver = over
		hourStorage := max(0, pt.StorageByteSeconds-p.StorageBytes*3600)
		storageOver += hourStorage
		total := priced(egressOver, p.OveragePricePerGiB, gib) + priced(storageOver, p.StoragePricePerGiBMonth, gib*monthSecond)
		if amount := total - charged; amount > 0 {
			out = append(out, HourCharge{Hour: pt.Start, Amount: amount, EgressOver: hourEgress, StorageOver: hourStorage})
			charged = total
		}
	}
	return out
}

// priced is floor(qty × price ÷ per), computed without overflow.
func priced(qty, price, per int64) int64 {
	if qty <= 0 || price <= 0 {
		return 0
	}
	v := new(big.Int).Mul(big.NewInt(qty), big.NewInt(price))
	return v.Quo(v, big.NewInt(per)).Int64()
}
