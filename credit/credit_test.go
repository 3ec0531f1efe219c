package credit

import (
	"errors"
	"strings"
	"testing"
)

func TestEntryValidate(t *testing.T) {
	ok := Entry{Org: "acme", Amount: 100, Kind: Grant, Source: "req-1"}
	tests := []struct {
		name   string
		change func(e *Entry)
		bad    string // a field the error names; "" valid
	}{
		{"grant", func(*Entry) {}, ""},
		{"usage takes", func(e *Entry) { e.Kind, e.Amount = Usage, -5 }, ""},
		{"expiry takes", func(e *Entry) { e.Kind, e.Amount = Expiry, -5 }, ""},
		{"top-up adds", func(e *Entry) { e.Kind = TopUp }, ""},
		{"no org", func(e *Entry) { e.Org = "" }, "org"},
		{"zero", func(e *Entry) { e.Amount = 0 }, "amount"},
		{"grant that takes", func(e *Entry) { e.Amount = -1 }, "amount"},
		{"usage that adds", func(e *Entry) { e.Kind = Usage }, "amount"},
		{"too large", func(e *Entry) { e.Amount = MaxAmount + 1 }, "amount"},
		{"unknown kind", func(e *Entry) { e.Kind = "gift" }, "kind"},
		{"no source", func(e *Entry) { e.Source = "" }, "source"},
		{"control character", func(e *Entry) { e.Source = "a\nb" }, "source"},
		{"long source", func(e *Entry) { e.Source = strings.Repeat("s", maxSource+1) }, "source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok
			tt.change(&e)
			err := e.Validate()
			if (err == nil) != (tt.bad == "") || (err != nil && !strings.Contains(err.Error(), tt.bad+":")) {
				t.Fatalf("Validate() = %v, want a problem with %q", err, tt.bad)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{Currency: "EUR"}).Validate(); err == nil || !strings.Contains(err.Error(), "billing.currency") || !strings.Contains(err.Error(), "Store") {
		t.Fatalf("Validate() = %v, want both problems", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a store")
	}
	var l Ledger
	if _, _, _, err := l.Append(t.Context(), Entry{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Append of an empty entry: %v", err)
	}
}
