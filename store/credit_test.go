package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/internal/redistest"
)

// creditStores are both ledgers: the bbolt file and a real Redis.
func creditStores(t *testing.T) map[string]credit.Store {
	t.Helper()
	st, err := Open(Config{Path: filepath.Join(t.TempDir(), "t.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	out := map[string]credit.Store{"bolt": NewBoltCredit(st)}
	if !testing.Short() {
		srv := redistest.Start(t)
		c := srv.NewClient(t)
		out["redis"] = NewRedisCredit(c)
	}
	return out
}

func TestCreditAppendOnceAndBalance(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for name, cs := range creditStores(t) {
		t.Run(name, func(t *testing.T) {
			steps := []struct {
				org, source string
				amount      int64
				appended    bool
				balance     int64
			}{
				{"acme", "req-1", 10_000, true, 10_000},
				{"acme", "usage:acme:2026030112", -2_500, true, 7_500},
				{"acme", "req-1", 10_000, false, 7_500}, // same source: no change
				{"acme", "usage:acme:2026030112", -99, false, 7_500},
				{"beta", "req-1", 500, true, 500},                                       // sources are per org
				{"acme", "big", 999_999_999_999_999, true, 7_500 + 999_999_999_999_999}, // beyond Lua's 14 digits
			}
			for i, s := range steps {
				e := credit.Entry{ID: fmt.Sprintf("crd_%d", i), Org: s.org, Amount: s.amount, Kind: credit.Grant, Source: s.source, Actor: "operator", At: at}
				got, appended, bal, err := cs.Append(ctx, e)
				if err != nil {
					t.Fatal(err)
				}
				if appended != s.appended || bal != s.balance || got.Source != s.source {
					t.Fatalf("step %d: appended %v balance %d source %q; want %v %d", i, appended, bal, got.Source, s.appended, s.balance)
				}
				if !appended && got.ID == e.ID {
					t.Fatalf("step %d: a duplicate returned the new entry, not the stored one", i)
				}
			}
			for _, org := range []string{"acme", "beta", "nobody"} {
				es, err := cs.Entries(ctx, org)
				if err != nil {
					t.Fatal(err)
				}
				var sum int64
				for _, e := range es {
					sum += e.Amount
				}
				bal, err := cs.Balance(ctx, org)
				if err != nil || bal != sum {
					t.Fatalf("%s: balance %d (%v), sum of %d entries %d", org, bal, err, len(es), sum)
				}
			}
		})
	}
}

// TestCreditConcurrentSameSource: many writers (two nodes drawing the same
// hour) append one entry per source, whatever the interleaving.
func TestCreditConcurrentSameSource(t *testing.T) {
	ctx := context.Background()
	for name, cs := range creditStores(t) {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			wins := map[string]int{}
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for h := 0; h < 20; h++ {
						src := fmt.Sprintf("usage:acme:20260301%02d", h)
						_, ok, _, err := cs.Append(ctx, credit.Entry{ID: "x", Org: "acme", Amount: -7, Kind: credit.Usage, Source: src, At: time.Now()})
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							mu.Lock()
							wins[src]++
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			for src, n := range wins {
				if n != 1 {
					t.Errorf("%s appended %d times", src, n)
				}
			}
			bal, _ := cs.Balance(ctx, "acme")
			es, _ := cs.Entries(ctx, "acme")
			if len(wins) != 20 || len(es) != 20 || bal != -140 {
				t.Fatalf("%d sources won, %d entries, balance %d; want 20, 20, -140", len(wins), len(es), bal)
			}
		})
	}
}
