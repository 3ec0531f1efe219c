package meter

import (
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// TestCountersFootprint: what a meter holds per (org, site) beyond the org
// and site strings (the registry's own): the Counters and their share of
// the index. A tollgate of a million sites makes a million of them.
func TestCountersFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100,000 counters")
	}
	if s := unsafe.Sizeof(Counters{}); s > 80 {
		t.Errorf("Counters is %d bytes, want at most 80", s)
	}
	const n = 100_000
	orgs, sites := make([]string, n), make([]string, n)
	for i := range n {
		orgs[i], sites[i] = fmt.Sprintf("org%07d", i), fmt.Sprintf("site%07d", i)
	}
	m, _ := newMeter(t, Config{}, newMemUsage(), nil, &clock{t: time.Now()})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		m.Counters(orgs[i], sites[i], "dir").AddRequest()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	t.Logf("%.1f bytes per counter", per)
	if per > 100 {
		t.Errorf("%.1f bytes of heap per counter, want at most 100", per)
	}
	runtime.KeepAlive(orgs)
	runtime.KeepAlive(sites)
	runtime.KeepAlive(m)
}

// TestCounterTable: the index finds every (org, site) through its growths,
// sites of the same name in other orgs included, and the kinds past 255
// names count as "other".
func TestCounterTable(t *testing.T) {
	m, _ := newMeter(t, Config{}, newMemUsage(), nil, &clock{t: time.Now()})
	const n = 3*counterChunk + 5
	made := map[[2]string]*Counters{}
	for i := range n {
		org, site := fmt.Sprintf("o%d", i%7), fmt.Sprintf("s%d", i/7) // each site name in up to 7 orgs
		c := m.Counters(org, site, fmt.Sprintf("k%d", i%300))
		if made[[2]string{org, site}] != nil {
			t.Fatalf("%s/%s made twice", org, site)
		}
		made[[2]string{org, site}] = c
	}
	for k, c := range made {
		if got := m.Counters(k[0], k[1], "dir"); got != c || c.org != k[0] || c.site != k[1] {
			t.Fatalf("%v: got %p (%s/%s), made %p", k, got, got.org, got.site, c)
		}
	}
	l := m.list()
	if l.n != n || len(l.kinds) != 256 || l.kinds[255] != otherKind {
		t.Fatalf("%d counters, %d kinds (last %q); want %d, 256, %q", l.n, len(l.kinds), l.kinds[len(l.kinds)-1], n, otherKind)
	}
	if c := made[[2]string{"o6", "s42"}]; l.kind(c) != "k0" { // i = 300
		t.Fatalf("counter 300: kind %q, want k0", l.kind(c))
	}
	if c := made[[2]string{"o4", "s36"}]; l.kind(c) != otherKind { // i = 256: k256, past 255 names
		t.Fatalf("counter 256: kind %q, want %q", l.kind(c), otherKind)
	}
	if c, _ := m.table.find("o7", "s0"); c != nil {
		t.Fatalf("o7/s0 found, never made")
	}
}

// TestCountersAddNoAlloc: the request path's counting allocates nothing.
func TestCountersAddNoAlloc(t *testing.T) {
	m, _ := newMeter(t, Config{}, newMemUsage(), nil, &clock{t: time.Now()})
	c := m.Counters("acme", "www", "dir")
	if n := testing.AllocsPerRun(100, func() {
		c.AddRequest()
		c.AddEgress(10)
		c.AddIngress(3)
		c.SetStorage(7)
	}); n != 0 {
		t.Fatalf("%v allocations per request, want 0", n)
	}
}

// TestReserve: after Reserve(n), making n counters does not grow the index
// (a growth rehashes every counter under the lock new routes wait for),
// and every counter made before and after is found.
func TestReserve(t *testing.T) {
	m, _ := newMeter(t, Config{}, newMemUsage(), nil, &clock{t: time.Now()})
	m.Counters("o", "before", "dir")
	const n = 5000
	m.Reserve(n)
	size := len(m.table.slots)
	if size < 2*n {
		t.Fatalf("Reserve(%d) left %d slots, want room for %d at most half full", n, size, n)
	}
	for i := range n - 1 {
		m.Counters("o", fmt.Sprintf("s%d", i), "dir")
	}
	if len(m.table.slots) != size {
		t.Fatalf("the index grew from %d to %d slots making %d reserved counters", size, len(m.table.slots), n)
	}
	m.Reserve(10) // never shrinks
	if len(m.table.slots) != size {
		t.Fatalf("Reserve(10) resized the index to %d", len(m.table.slots))
	}
	for _, site := range []string{"before", "s0", fmt.Sprintf("s%d", n-2)} {
		if c, _ := m.table.find("o", site); c == nil || c.site != site {
			t.Fatalf("%s not found after the reserve", site)
		}
	}
}
