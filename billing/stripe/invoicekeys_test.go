package stripe

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestInvoiceIdempotencyKeys against stripe-mock: with a key, the creation
// first lists the customer's invoices (to find one made with the key: none
// in stripe-mock's fixtures), then sends a key derived from it on every
// call and puts it, with the request's fingerprint, in the draft's
// metadata; a key too long for the derived keys is sent hashed; a bad key
// is refused before any call.
func TestInvoiceIdempotencyKeys(t *testing.T) {
	sm := stripetest.Start(t)
	rec := &apiRecorder{base: http.DefaultTransport}
	s := newAPIStripe(t, sm, rec)
	ctx := context.Background()
	items := []InvoiceItem{{Description: "Setup fee", Amount: 5000}, {Description: "Migration", Amount: 12000}}
	long := strings.Repeat("k", MaxIdempotencyKey)
	sum := sha256.Sum256([]byte(long))
	hashed := "sha256-" + hex.EncodeToString(sum[:]) // 71 characters: with ":finalize", within 255

	for _, tc := range []struct {
		name, key string
		due       int
		calls     []string
		keys      []string
	}{
		{"sent", "retry-1", 14,
			[]string{"GET /v1/invoices", "POST /v1/invoices", "POST /v1/invoiceitems", "POST /v1/invoiceitems",
				"POST /v1/invoices/{id}/finalize", "POST /v1/invoices/{id}/send"},
			[]string{"", "retry-1:invoice", "retry-1:item:0", "retry-1:item:1", "retry-1:finalize", "retry-1:send"}},
		{"charged automatically", "retry-2", 0,
			[]string{"GET /v1/invoices", "POST /v1/invoices", "POST /v1/invoiceitems", "POST /v1/invoiceitems", "POST /v1/invoices/{id}/finalize"},
			[]string{"", "retry-2:invoice", "retry-2:item:0", "retry-2:item:1", "retry-2:finalize"}},
		{"longest key", long, 0,
			[]string{"GET /v1/invoices", "POST /v1/invoices", "POST /v1/invoiceitems", "POST /v1/invoiceitems", "POST /v1/invoices/{id}/finalize"},
			[]string{"", hashed + ":invoice", hashed + ":item:0", hashed + ":item:1", hashed + ":finalize"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := InvoiceRequest{Items: items, DueDays: tc.due, IdempotencyKey: tc.key}
			inv, err := s.CreateInvoice(ctx, "paying", r)
			if err != nil {
				t.Fatal(err)
			}
			if inv.ID == "" || inv.Replayed || inv.Sent != (tc.due > 0) {
				t.Fatalf("invoice %+v", inv)
			}
			keys := rec.keys()
			calls, forms := rec.take()
			if strings.Join(calls, ", ") != strings.Join(tc.calls, ", ") {
				t.Fatalf("calls %v, want %v", calls, tc.calls)
			}
			if strings.Join(keys, ", ") != strings.Join(tc.keys, ", ") {
				t.Errorf("keys %q, want %q", keys, tc.keys)
			}
			if l := forms[0]; l.Get("customer") != "cus_paying" || l.Get("limit") != "100" {
				t.Errorf("list %v", l)
			}
			draft := forms[1]
			if draft.Get("metadata[tollgate_idempotency_key]") != tc.key || draft.Get("metadata[tollgate_idempotency_request]") != r.fingerprint() {
				t.Errorf("draft metadata %v", draft)
			}
		})
	}

	// Items in another order are another request; spaces around a
	// description and the key itself do not count.
	a := InvoiceRequest{Items: items, DueDays: 14}
	b := InvoiceRequest{Items: []InvoiceItem{items[1], items[0]}, DueDays: 14}
	same := InvoiceRequest{Items: []InvoiceItem{{Description: " Setup fee ", Amount: 5000}, items[1]}, DueDays: 14, IdempotencyKey: "x"}
	if a.fingerprint() == b.fingerprint() || a.fingerprint() != same.fingerprint() {
		t.Errorf("fingerprints: a %s, reordered %s, same with spaces and a key %s", a.fingerprint(), b.fingerprint(), same.fingerprint())
	}

	for _, key := range []string{strings.Repeat("k", MaxIdempotencyKey+1), "clé", "tab\there", " lead", "trail ", "nl\n"} {
		_, err := s.CreateInvoice(ctx, "paying", InvoiceRequest{Items: items, IdempotencyKey: key})
		if !errors.Is(err, sites.ErrInvalid) || !strings.Contains(err.Error(), "Idempotency-Key") {
			t.Errorf("key %q: %v", key, err)
		}
	}
	if calls, _ := rec.take(); len(calls) != 0 {
		t.Fatalf("refused keys called Stripe: %v", calls)
	}
}

func TestCheckIdempotencyKey(t *testing.T) {
	for key, ok := range map[string]bool{
		"a": true, "retry-1": true, "2026-11-26T12:00:00Z/acme/setup fee": true, strings.Repeat("~", 255): true,
		"": false, strings.Repeat("a", 256): false, "é": false, "a\x7f": false, "a\x00": false, " a": false, "a ": false,
	} {
		if err := CheckIdempotencyKey(key); (err == nil) != ok {
			t.Errorf("%q: %v, want ok %v", key, err, ok)
		}
	}
}
