// Package credit is the prepaid credit ledger: an append-only list of
// entries per org whose sum is the org's balance, in integer minor units of
// one currency ([billing] currency). Each entry names its source, an
// idempotency key: appending an entry whose source the org's ledger holds
// already changes nothing, so a Stripe event delivered twice, an hour's
// usage drawn by two nodes, or an operator's request sent again count once.
//
// The ledger lives where the registry does (Store): the bbolt file, or the
// cluster's Redis, so every node appends to and reads one ledger.
// *store.BoltCredit and *store.RedisCredit implement Store.
package credit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind says why an entry changes the balance.
type Kind string

// Kinds of entries. Grant, TopUp and Refund add credit (amount > 0); Usage
// and Expiry take it (amount < 0).
const (
	Grant  Kind = "grant"  // the operator gives credit
	TopUp  Kind = "top_up" // the tenant paid (Stripe Checkout)
	Usage  Kind = "usage"  // an hour's usage beyond the plan, drawn by billing
	Refund Kind = "refund" // credit given back (usage charged in error)
	Expiry Kind = "expiry" // credit that lapsed, taken by the operator
)

// Kinds lists every kind, for validation and docs.
var Kinds = []Kind{Grant, TopUp, Usage, Refund, Expiry}

// Positive reports whether entries of kind k add credit.
func (k Kind) Positive() bool { return k == Grant || k == TopUp || k == Refund }

// Known reports whether k is one of Kinds.
func (k Kind) Known() bool {
	for _, x := range Kinds {
		if k == x {
			return true
		}
	}
	return false
}

// MaxAmount bounds the magnitude of one entry (10^15 minor units): sums of
// any realistic ledger stay far inside int64.
const MaxAmount = 1_000_000_000_000_000

// maxSource bounds a source's length in bytes.
const maxSource = 256

// Entry is one line of an org's ledger.
type Entry struct {
	// ID identifies the entry ("crd_" and 16 hex digits), set by Append.
	ID  string `json:"id"`
	Org string `json:"org"`
	// Amount is in minor units of the ledger's currency: positive adds
	// credit, negative takes it (see Kind).
	Amount int64 `json:"amount"`
	Kind   Kind  `json:"kind"`
	// Source is the idempotency key, unique within the org's ledger: a
	// Stripe Checkout session id, "usage:ORG:YYYYMMDDHH", an operator's
	// request id.
	Source string `json:"source"`
	// Actor is who wrote it: "operator", "stripe", "billing".
	Actor string    `json:"actor"`
	At    time.Time `json:"at"`
	// Note says more, for people (e.g. the usage an hour's charge prices).
	Note string `json:"note,omitempty"`
	// Balance is the org's balance after this entry. Entries computes it
	// when listing; it is not stored.
	Balance int64 `json:"balance"`
}

// Validate reports every bad field of an entry about to be appended.
func (e Entry) Validate() error {
	var errs []error
	if e.Org == "" {
		errs = append(errs, errors.New("org: required"))
	}
	if !e.Kind.Known() {
		errs = append(errs, fmt.Errorf("kind: %q must be one of grant, top_up, usage, refund, expiry", e.Kind))
	}
	switch {
	case e.Amount == 0:
		errs = append(errs, errors.New("amount: must not be 0"))
	case e.Amount > MaxAmount || e.Amount < -MaxAmount:
		errs = append(errs, fmt.Errorf("amount: %d exceeds %d in magnitude", e.Amount, int64(MaxAmount)))
	case e.Kind.Known() && e.Kind.Positive() != (e.Amount > 0):
		errs = append(errs, fmt.Errorf("amount: %d has the wrong sign for kind %s (grant, top_up and refund add, usage and expiry take)", e.Amount, e.Kind))
	}
	if e.Source == "" || len(e.Source) > maxSource || strings.ContainsFunc(e.Source, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		errs = append(errs, fmt.Errorf("source: must be 1-%d bytes without control characters", maxSource))
	}
	return errors.Join(errs...)
}

// ErrInvalid wraps the problems of an entry Append refuses.
var ErrInvalid = errors.New("invalid credit entry")

// Store keeps the ledgers. It must be safe for concurrent use by several
// processes sharing it.
type Store interface {
	// Append adds e to the end of e.Org's ledger and adds e.Amount to its
	// balance, in one atomic step, unless the ledger holds an entry with
	// e.Source already: then it changes nothing and returns that entry,
	// appended false. balance is the org's balance after the step.
	Append(ctx context.Context, e Entry) (stored Entry, appended bool, balance int64, err error)
	// Balance is the org's balance, kept with each append (0 for an org
	// without entries).
	Balance(ctx context.Context, org string) (int64, error)
	// Entries lists the org's entries, oldest first (Balance unset).
	Entries(ctx context.Context, org string) ([]Entry, error)
}

// Config configures a Ledger.
type Config struct {
	// Store keeps the entries. Required.
	Store Store
	// Currency is the ISO 4217 code (lower case) of every amount, from
	// [billing] currency. Required.
	Currency string
	// Now stamps entries without a time. Default time.Now.
	Now func() time.Time
}

// Validate reports every missing or bad field.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("credit: Config.Store is required"))
	}
	if len(c.Currency) != 3 || strings.Trim(c.Currency, "abcdefghijklmnopqrstuvwxyz") != "" {
		errs = append(errs, fmt.Errorf("billing.currency: %q must be an ISO 4217 code in lower case, such as \"eur\"", c.Currency))
	}
	return errors.Join(errs...)
}

// Ledger appends checked entries to the ledgers of Store and reads them.
// It is safe for concurrent use.
type Ledger struct {
	st       Store
	currency string
	now      func() time.Time
}

// New returns the ledger over cfg.Store.
func New(cfg Config) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Ledger{st: cfg.Store, currency: cfg.Currency, now: cfg.Now}, nil
}

// Currency is the currency of every amount.
func (l *Ledger) Currency() string { return l.currency }

// Append checks e (ErrInvalid), sets its id and, when zero, its time, and
// appends it unless its source is in the org's ledger already (appended
// false: the stored entry is returned, nothing changes).
func (l *Ledger) Append(ctx context.Context, e Entry) (Entry, bool, int64, error) {
	if err := e.Validate(); err != nil {
		return Entry{}, false, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	e.ID, e.Balance = newID(), 0
	if e.At.IsZero() {
		e.At = l.now()
	}
	e.At = e.At.UTC()
	return l.st.Append(ctx, e)
}

// Balance is the org's balance.
func (l *Ledger) Balance(ctx context.Context, org string) (int64, error) {
	return l.st.Balance(ctx, org)
}

// Entries lists the org's entries, oldest first, each with the balance
// after it.
func (l *Ledger) Entries(ctx context.Context, org string) ([]Entry, error) {
	es, err := l.st.Entries(ctx, org)
	var sum int64
	for i := range es {
		sum += es[i].Amount
		es[i].Balance = sum
	}
	return es, err
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "crd_" + hex.EncodeToString(b[:])
}
