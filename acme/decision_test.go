package acme

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/storetest"
)

type fakeHosts map[string]struct {
	org      string
	verified bool
}

func (f fakeHosts) DomainOrg(name string) (string, bool, bool) {
	d, ok := f[name]
	return d.org, d.verified, ok
}

func (f fakeHosts) OwnerOrg(owner string) string { return "gitea-" + owner }

type fakeOwners struct {
	exist map[string]bool
	err   error
	calls atomic.Int64
}

func (f *fakeOwners) OwnerExists(_ context.Context, owner string) (bool, error) {
	f.calls.Add(1)
	return f.exist[owner], f.err
}

func newTestDecider(owners *fakeOwners, now *time.Time) (*decider, map[string]int) {
	refused := map[string]int{}
	return &decider{
		hosts: fakeHosts{
			"shop.example":     {"shop", true},
			"pending.example":  {"shop", false},
			"xn--bcher-kva.ch": {"books", true},
		},
		names:  map[string]bool{"billing.example": true},
		owners: owners, pagesSuffix: ".pages.example",
		ownerTTL: 10 * time.Minute, negativeTTL: time.Minute,
		now:     func() time.Time { return *now },
		refused: func(r string) { refused[r]++ },
		known:   map[string]ownerEntry{},
	}, refused
}

func TestDecide(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	owners := &fakeOwners{exist: map[string]bool{"alice": true}}
	d, refused := newTestDecider(owners, &now)
	for _, tc := range []struct {
		name, org, reason string
	}{
		{"shop.example", "shop", ""},
		{"billing.example", operatorOrg, ""},
		{"xn--bcher-kva.ch", "books", ""},
		{"pending.example", "", reasonUnverified},
		{"", "", reasonNoSNI},
		{"127.0.0.1", "", reasonIP},
		{"::1", "", reasonIP},
		{"2001:db8::1", "", reasonIP},
		{strings.Repeat("a", 300) + ".example", "", reasonInvalid},
		{"UPPER.example", "", reasonInvalid}, // SNI arrives lower-cased by the caller
		{"bad_name.example", "", reasonInvalid},
		{"a..b.example", "", reasonInvalid},
		{"unknown.example", "", reasonUnknownHost},
		{"sub.shop.example", "", reasonUnknownHost},
		{"alice.pages.example", "gitea-alice", ""},
		{"bob.pages.example", "", reasonUnknownOwner},
		{"x.alice.pages.example", "", reasonUnknownHost}, // owners are one label
		{"pages.example", "", reasonUnknownHost},
		{strings.Repeat("o", 41) + ".pages.example", "", reasonUnknownHost},
	} {
		org, err := d.decide(context.Background(), tc.name)
		switch {
		case tc.reason == "" && (err != nil || org != tc.org):
			t.Errorf("%q: got %q, %v; want org %q", tc.name, org, err, tc.org)
		case tc.reason != "":
			var r *refusal
			if !errors.As(err, &r) || r.reason != tc.reason || !errors.Is(err, ErrRefused) {
				t.Errorf("%q: got %q, %v; want refusal %s", tc.name, org, err, tc.reason)
			}
		}
	}
	if refused[reasonIP] != 3 || refused[reasonInvalid] != 4 {
		t.Errorf("refusals counted %v", refused)
	}
}

// TestDecideCachesOwners: repeated unknown pages names cost one look-up per
// owner and NegativeTTL; known owners one per OwnerTTL; failures are
// negatively cached too.
func TestDecideCachesOwners(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	owners := &fakeOwners{exist: map[string]bool{"alice": true}}
	d, _ := newTestDecider(owners, &now)
	ctx := context.Background()
	for range 100 {
		d.decide(ctx, "bob.pages.example")
		d.decide(ctx, "alice.pages.example")
	}
	if n := owners.calls.Load(); n != 2 {
		t.Fatalf("%d look-ups for 200 decisions on 2 owners, want 2", n)
	}
	now = now.Add(2 * time.Minute) // past NegativeTTL, within OwnerTTL
	d.decide(ctx, "bob.pages.example")
	d.decide(ctx, "alice.pages.example")
	if n := owners.calls.Load(); n != 3 {
		t.Fatalf("%d look-ups after the negative TTL, want 3", n)
	}

	owners.err = errors.New("gitea down")
	_, err := d.decide(ctx, "carol.pages.example")
	var r *refusal
	if !errors.As(err, &r) || r.reason != reasonLookupFailed {
		t.Fatalf("look-up failure: %v", err)
	}
	d.decide(ctx, "carol.pages.example")
	if n := owners.calls.Load(); n != 4 {
		t.Fatalf("a failed look-up was repeated at once: %d calls", n)
	}

	// With a wildcard certificate, pages hosts need no look-up.
	d.wildcard = true
	if org, err := d.decide(ctx, "dave.pages.example"); err != nil || org != "gitea-dave" || owners.calls.Load() != 4 {
		t.Fatalf("wildcard: %q %v, %d calls", org, err, owners.calls.Load())
	}
}

func TestIssuanceLimits(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	storage := NewBoltStorage(storetest.Open(t))
	l := &issuanceLog{storage: storage, perOrgDay: 2, globalHour: 3, now: func() time.Time { return now }}
	for i, tc := range []struct {
		org, name string
		advance   time.Duration
		want      string
	}{
		{"a", "1.a.example", 0, ""},
		{"a", "2.a.example", 0, ""},
		{"a", "3.a.example", 0, reasonOrgLimit},
		{"b", "1.b.example", 0, ""},
		{"c", "1.c.example", 0, reasonGlobalLimit},
		{"c", "1.c.example", 61 * time.Minute, ""},   // the hour passed
		{"a", "3.a.example", 0, reasonOrgLimit},      // the day did not
		{"a", "3.a.example", 23 * time.Hour, ""},     // now it did
		{"a", "4.a.example", 0, ""},                  // old records were pruned
		{"a", "5.a.example", 0, reasonOrgLimit},      // 2 in the last day again
		{"other", "x.example", 0, ""},                // the third in this hour
		{"other", "y.example", 0, reasonGlobalLimit}, // a fourth is not
	} {
		now = now.Add(tc.advance)
		got, err := l.reserve(ctx, tc.org, tc.name)
		if err != nil || got != tc.want {
			t.Fatalf("step %d (%s %s): %q %v, want %q", i, tc.org, tc.name, got, err, tc.want)
		}
	}
	keys, err := storage.List(ctx, issuedPrefix, false)
	if err != nil || len(keys) != 4 {
		t.Fatalf("records kept: %v %v, want the 4 of the last day", keys, err)
	}

	l.perOrgDay, l.globalHour = -1, -1
	for i := range 50 {
		if got, err := l.reserve(ctx, "big", strings.Repeat("x", i+1)+".example"); got != "" || err != nil {
			t.Fatalf("caps off: %q %v", got, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{}
	ok.Defaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	bad := Config{CA: "ftp://x", OwnerTTL: -1, NegativeTTL: -1, WildcardCert: "c.pem",
		DisableHTTPChallenge: true, DisableTLSALPNChallenge: true}
	bad.Defaults()
	err := bad.Validate()
	for _, key := range []string{"acme.ca", "acme.owner_ttl", "acme.negative_ttl", "acme.wildcard_cert", "acme.disable_http_challenge"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate does not name %s: %v", key, err)
		}
	}
}

// FuzzDecide: any SNI value is decided without panicking, and only names
// tollgate routes are allowed.
func FuzzDecide(f *testing.F) {
	for _, s := range []string{"shop.example", "alice.pages.example", "", "127.0.0.1", "::1", "a..b", "xn--", "ALICE.pages.example",
		"alice.pages.example.", "\x00", "é.pages.example", strings.Repeat("a.", 200)} {
		f.Add(s)
	}
	now := time.Unix(1_800_000_000, 0)
	owners := &fakeOwners{exist: map[string]bool{"alice": true}}
	d, _ := newTestDecider(owners, &now)
	f.Fuzz(func(t *testing.T, name string) {
		org, err := d.decide(context.Background(), name)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("%q: %v is not a refusal", name, err)
			}
			return
		}
		switch {
		case name == "shop.example" && org == "shop", name == "xn--bcher-kva.ch" && org == "books",
			name == "alice.pages.example" && org == "gitea-alice", name == "billing.example" && org == operatorOrg:
		default:
			t.Fatalf("%q allowed for org %q", name, org)
		}
	})
}
