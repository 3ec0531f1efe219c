package tokens

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/store"
)

// The store's drivers implement Store.
var (
	_ Store = (*store.Bolt)(nil)
	_ Store = (*store.RedisKV)(nil)
)

// TestVerifyRefusesWhatIsNotAToken: malformed, altered, unknown and
// expired tokens are all ErrUnauthorized, and no different from each
// other.
func TestVerifyRefusesWhatIsNotAToken(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	ts, err := New(storetest.Open(t), Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok, secret, err := ts.Create(ctx, Spec{Org: "acme", Name: "ci", Scopes: []Scope{Write, Read, Read}, ExpiresAt: clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.Scopes) != 2 || tok.Scopes[0] != Read {
		t.Errorf("scopes %v, want [read write]", tok.Scopes)
	}
	if _, err := ts.Verify(ctx, secret); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	last := secret[len(secret)-1:]
	flip := map[string]string{"0": "1"}[last]
	if flip == "" {
		flip = "0"
	}
	for name, s := range map[string]string{
		"empty":      "",
		"no prefix":  strings.TrimPrefix(secret, Prefix),
		"truncated":  secret[:len(secret)-1],
		"altered":    secret[:len(secret)-1] + flip,
		"upper case": strings.ToUpper(secret),
		"unknown id": Prefix + "0000000000000000" + secret[len(Prefix)+16:],
	} {
		if _, err := ts.Verify(ctx, s); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: %v, want ErrUnauthorized", name, err)
		}
	}
	clock.Add(time.Hour)
	if _, err := ts.Verify(ctx, secret); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("expired: %v", err)
	}
}

func TestSpecValidate(t *testing.T) {
	now := time.Now()
	for name, s := range map[string]Spec{
		"no org":       {Name: "x", Scopes: []Scope{Read}},
		"no name":      {Org: "a", Scopes: []Scope{Read}},
		"no scopes":    {Org: "a", Name: "x"},
		"bad scope":    {Org: "a", Name: "x", Scopes: []Scope{"root"}},
		"past expiry":  {Org: "a", Name: "x", Scopes: []Scope{Read}, ExpiresAt: now.Add(-time.Second)},
		"control char": {Org: "a", Name: "x\n", Scopes: []Scope{Read}},
	} {
		if _, err := s.validate(now); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestExpiry(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "12h": 12 * time.Hour, "1d": 24 * time.Hour} {
		if got, err := Expiry(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "d", "0d", "-1d", "1.5d", "soon", "-3h", "1dd"} {
		if _, err := Expiry(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
