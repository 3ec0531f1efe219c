package ratelimit

import (
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// TestTableBuckets: a key gets burst tokens, then one per 1/rps; keys do
// not share buckets.
func TestTableBuckets(t *testing.T) {
	t0 := time.Now()
	for _, tc := range []struct {
		name  string
		rps   float64
		burst int
		at    []time.Duration // requests of key 1, each at t0+at
		want  []bool
	}{
		{"burst then refused", 10, 3, []time.Duration{0, 0, 0, 0}, []bool{true, true, true, false}},
		{"refill after 1/rps", 10, 1, []time.Duration{0, 0, 50 * time.Millisecond, 100 * time.Millisecond}, []bool{true, false, false, true}},
		{"refill capped at burst", 10, 2, []time.Duration{0, 0, 0, time.Hour, time.Hour, time.Hour}, []bool{true, true, false, true, true, false}},
		{"slow rate", 0.5, 1, []time.Duration{0, time.Second, 2 * time.Second}, []bool{true, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := NewTable(0, tc.rps, tc.burst)
			for i, d := range tc.at {
				if got := tb.Allow(1, t0.Add(d)); got != tc.want[i] {
					t.Errorf("request %d at +%v: %v; want %v", i, d, got, tc.want[i])
				}
			}
			if !tb.Allow(2, t0) {
				t.Error("another key was refused")
			}
		})
	}
}

// TestTableBounded: 100,000 distinct client keys leave the table at its
// size, in memory too, and a key still in use keeps its bucket.
func TestTableBounded(t *testing.T) {
	const size = 4096
	tb := NewTable(size, 1, 1)
	keys := NewKeys()
	scope := keys.String("site")
	abuser := keys.Addr(scope, netip.MustParseAddr("192.0.2.1"))
	now := time.Now()
	tb.Allow(abuser, now)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		now = now.Add(time.Microsecond)
		tb.Allow(keys.Addr(scope, a), now)
		if i%100 == 0 && tb.Allow(abuser, now) {
			t.Fatalf("after %d other keys the abuser's empty bucket was evicted", i)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tb.Size() != size || tb.Len() != size {
		t.Errorf("size %d, %d buckets in use; want %d, %d", tb.Size(), tb.Len(), size, size)
	}
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 64<<10 {
		t.Errorf("heap grew by %d bytes over 100,000 keys", grown)
	}
}

func TestTableAllocs(t *testing.T) {
	tb := NewTable(0, 1000, 10)
	keys := NewKeys()
	a := netip.MustParseAddr("2001:db8::1")
	host := []byte("www.example")
	now := time.Now()
	if n := testing.AllocsPerRun(1000, func() { tb.Allow(keys.Addr(keys.Bytes(host), a), now) }); n != 0 {
		t.Fatalf("%.1f allocations per Allow", n)
	}
}

func TestRefusal(t *testing.T) {
	for _, tc := range []struct {
		name                string
		rps                 float64
		retry, policy, left string
	}{
		{"org", 100, "1", `"org";q=100;w=1`, `"org";r=0;t=1`},
		{"ip", 2.5, "1", `"ip";q=2;w=1`, `"ip";r=0;t=1`},
		{"org", 1.0 / 3, "3", `"org";q=1;w=3`, `"org";r=0;t=3`},
	} {
		r := NewRefusal(tc.name, tc.rps)
		if string(r.RetryAfter) != tc.retry || string(r.Policy) != tc.policy || string(r.State) != tc.left {
			t.Errorf("NewRefusal(%q, %v) = %s | %s | %s; want %s | %s | %s", tc.name, tc.rps, r.RetryAfter, r.Policy, r.State, tc.retry, tc.policy, tc.left)
		}
	}
}

func BenchmarkTableAllow(b *testing.B) {
	tb := NewTable(64<<10, 1e9, 1<<30)
	keys := NewKeys()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := uint32(0)
		now := time.Now()
		for pb.Next() {
			i++
			tb.Allow(keys.Addr(7, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})), now)
		}
	})
}
