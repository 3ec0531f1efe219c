package stripe

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/tollgate-edge/tollgate/sites"
)

// Idempotent operator invoices. An operator's script that retries a
// creation after a timeout passes the same key (InvoiceRequest
// IdempotencyKey, the Idempotency-Key header of the admin API) and bills
// the customer once, in two layers:
//
//   - Stripe's: every Stripe call of the creation carries a key derived
//     from it (KEY:invoice, KEY:item:N, KEY:finalize, KEY:send). For 24
//     hours Stripe answers a call it has seen with its first answer, so a
//     retry resumes the same draft, items and finalization: nothing is
//     made twice, even when the first attempt stopped half-way.
//   - tollgate's, independent of Stripe's 24 hours: the invoice carries the
//     key in its metadata (tollgate_idempotency_key) with a fingerprint of
//     the request (tollgate_idempotency_request). Before creating, the
//     customer's newest invoices (one list call, invoicesListed) are
//     searched for the key: one found past draft is answered as it is now,
//     with Replayed set, and nothing is created. One found as a draft (an
//     attempt still running, or stopped before finalizing) is not an
//     answer: the creation goes on, and Stripe's keys resume that draft.
//     Stripe finalizes a draft left alone for about an hour (auto_advance):
//     one left by an attempt that died between its items is then found
//     open, and answered as it is, with the items it has.
//
// The same key with a different request (items, due days, currency, or
// another org: Stripe's keys are the account's) is refused as a conflict,
// by tollgate's fingerprint or by Stripe (idempotency_error). A creation
// that failed and deleted its draft fails again with the same key while
// Stripe remembers the first answers; a changed or corrected request takes
// a new key.

// Metadata of an invoice created with an idempotency key.
const (
	metaIdemKey     = "tollgate_idempotency_key"
	metaIdemRequest = "tollgate_idempotency_request"
)

// MaxIdempotencyKey is the longest key accepted, as Stripe's own API.
const MaxIdempotencyKey = 255

// longestStep is the longest suffix added to a key (":finalize"); a key
// longer than MaxIdempotencyKey minus it is replaced by its SHA-256 in the
// keys sent to Stripe, which stay within Stripe's 255 characters.
const longestStep = len(":finalize")

// CheckIdempotencyKey reports whether k is 1 to 255 printable ASCII
// characters (space to tilde), what Stripe accepts, that neither begin nor
// end with a space (stripe-go trims the keys it sends: "k " would be
// Stripe's "k").
func CheckIdempotencyKey(k string) error {
	if k == "" || len(k) > MaxIdempotencyKey {
		return fmt.Errorf("Idempotency-Key: %d characters, want 1 to %d", len(k), MaxIdempotencyKey)
	}
	if k[0] == ' ' || k[len(k)-1] == ' ' {
		return errors.New("Idempotency-Key: begins or ends with a space")
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < ' ' || c > '~' {
			return fmt.Errorf("Idempotency-Key: byte %d (0x%02x) is not printable ASCII", i, c)
		}
	}
	return nil
}

// invoiceKeys derives the Idempotency-Key of each Stripe call of one
// creation; the zero value sends none.
type invoiceKeys struct{ base string }

func newInvoiceKeys(key string) invoiceKeys {
	if key == "" || len(key)+longestStep <= MaxIdempotencyKey {
		return invoiceKeys{key}
	}
	sum := sha256.Sum256([]byte(key))
	return invoiceKeys{"sha256-" + hex.EncodeToString(sum[:])}
}

// set puts the key of step on p (nothing without a key).
func (k invoiceKeys) set(p *stripego.Params, step string) {
	if k.base != "" {
		p.SetIdempotencyKey(k.base + ":" + step)
	}
}

// fingerprint identifies r's content (not its key): a hex SHA-256 prefix
// of its normalized items, due days and currency.
func (r InvoiceRequest) fingerprint() string {
	n := InvoiceRequest{DueDays: r.DueDays, Currency: strings.ToLower(r.Currency)}
	for _, it := range r.Items {
		n.Items = append(n.Items, InvoiceItem{Description: strings.TrimSpace(it.Description), Amount: it.Amount})
	}
	b, _ := json.Marshal(n) // plain fields: never fails
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// ErrIdempotencyConflict: the key was used for a different request.
var ErrIdempotencyConflict = fmt.Errorf("this Idempotency-Key was used for a different invoice request; use a new key: %w", sites.ErrConflict)

// replay returns the invoice of customer created with r's key, when one
// past draft is among its newest invoicesListed (found false when none).
func (s *Stripe) replay(ctx context.Context, customer string, r InvoiceRequest) (inv Invoice, found bool, err error) {
	params := &stripego.InvoiceListParams{Customer: stripego.String(customer)}
	params.Context = ctx
	params.Limit = stripego.Int64(invoicesListed)
	params.Single = true
	it := s.api.invoices.List(params)
	for it.Next() {
		in := it.Invoice()
		if in.Metadata[metaIdemKey] != r.IdempotencyKey {
			continue
		}
		if in.Metadata[metaIdemRequest] != r.fingerprint() {
			return Invoice{}, false, fmt.Errorf("invoice %s: %w", in.ID, ErrIdempotencyConflict)
		}
		if in.Status == stripego.InvoiceStatusDraft {
			return Invoice{}, false, nil
		}
		inv = invoiceOf(in)
		inv.Replayed = true
		return inv, true, nil
	}
	if err := it.Err(); err != nil {
		return Invoice{}, false, upstream(err, "looking for the invoice of this Idempotency-Key")
	}
	return Invoice{}, false, nil
}
