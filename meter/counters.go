package meter

// The counters of every (org, site), and how they are found.

import (
	"hash/maphash"
	"iter"
	"math"
	"sync/atomic"
)

// Counters are one (org, site)'s usage since the last flush. The request
// path adds to them without locks or allocation. A tollgate of a million
// sites holds a million of them, so they take 80 bytes: the kind is a code
// into the meter's kind names, not a string.
type Counters struct {
	org, site string
	egress    atomic.Int64
	ingress   atomic.Int64
	requests  atomic.Int64
	storage   atomic.Int64 // bytes stored now (a gauge, integrated at flush)
	// storageAcc is the storage integrated so far and not yet written, in
	// byte-seconds; only collect touches it.
	storageAcc float64
	// storageGen is the ReplaceStorage that last set storage.
	storageGen atomic.Uint32
	kind       uint8 // the site's kind: an index in counterTable.kinds
}

// AddEgress counts n bytes written to a client.
func (c *Counters) AddEgress(n int) { c.egress.Add(int64(n)) }

// AddIngress counts n request body bytes received.
func (c *Counters) AddIngress(n int) { c.ingress.Add(int64(n)) }

// AddRequest counts one request.
func (c *Counters) AddRequest() { c.requests.Add(1) }

// SetStorage records how many bytes the site stores now.
func (c *Counters) SetStorage(n int64) { c.storage.Store(n) }

// Counters returns the counters of (org, site), creating them. kind is the
// site's kind for metrics ("dir", "upstream", ...), taken when they are
// created; past 255 kind names, a new one is counted as "other". Call it
// when routes are built, not per request.
func (m *Meter) Counters(org, site, kind string) *Counters {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.table.get(org, site, kind)
}

// counterChunk is how many Counters one allocation of a counterTable holds
// (80 KiB: ten whole pages).
const counterChunk = 1024

// otherKind is the kind name of the counters made past 255 kind names.
const otherKind = "other"

// counterTable is every Counters made, in creation order, and an index by
// (org, site); nothing is ever removed. It is built for a million sites,
// each with its Counters for life (the site tender meters every site's
// storage): the Counters live in chunks of counterChunk rather than an
// allocation each (no size-class rounding, no slice of pointers), and the
// index is an open-addressing hash table of 4-byte counter numbers with
// linear probing, at most half full, that compares the org and site the
// Counters hold (no copy of a key): about 90 bytes per (org, site) in all
// (TestCountersFootprint). Writes hold Meter.mu.
type counterTable struct {
	counterList          // every Counters made, and the kind names by code
	slots       []uint32 // counter number + 1 (0: empty slot); a power of 2 long
	seed        maphash.Seed
	codes       map[string]uint8 // kind name → code
}

// get returns the counters of (org, site), creating them with kind.
func (t *counterTable) get(org, site, kind string) *Counters {
	c, slot := t.find(org, site)
	if c != nil {
		return c
	}
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
		_, slot = t.find(org, site)
	}
	if t.n%counterChunk == 0 {
		t.chunks = append(t.chunks, new([counterChunk]Counters))
	}
	c = t.at(t.n)
	c.org, c.site, c.kind = org, site, t.code(kind)
	t.n++
	t.slots[slot] = uint32(t.n)
	return c
}

// find returns the counters of (org, site), or nil and the empty slot
// where they go (-1 before the first grow).
func (t *counterTable) find(org, site string) (*Counters, int) {
	if len(t.slots) == 0 {
		return nil, -1
	}
	mask := uint64(len(t.slots) - 1)
	for i := t.hash(org, site) & mask; ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == 0 {
			return nil, int(i)
		}
		if c := t.at(int(s - 1)); c.site == site && c.org == org {
			return c, int(i)
		}
	}
}

// grow doubles the index (64 slots at first).
func (t *counterTable) grow() { t.resize(max(64, 2*len(t.slots))) }

// reserve grows the index, if it must, to hold n counters at most half
// full.
func (t *counterTable) reserve(n int) {
	size := 64
	for size < 2*n {
		size *= 2
	}
	if size > len(t.slots) {
		t.resize(size)
	}
}

// resize makes the index size slots long (a power of 2, larger than it
// is) and places every counter again.
func (t *counterTable) resize(size int) {
	if t.slots == nil {
		t.seed = maphash.MakeSeed()
	}
	old := t.slots
	t.slots = make([]uint32, size)
	mask := uint64(len(t.slots) - 1)
	for _, s := range old {
		if s == 0 {
			continue
		}
		c := t.at(int(s - 1))
		i := t.hash(c.org, c.site) & mask
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = s
	}
}

func (t *counterTable) hash(org, site string) uint64 {
	return maphash.String(t.seed, org)*31 + maphash.String(t.seed, site)
}

// code returns kind's code, giving it the next one if it has none; once
// 255 names have codes, a new name gets otherKind's (code 255 at most).
func (t *counterTable) code(kind string) uint8 {
	c, ok := t.codes[kind]
	if !ok && len(t.kinds) >= math.MaxUint8 {
		kind = otherKind
		c, ok = t.codes[kind]
	}
	if !ok {
		if t.codes == nil {
			t.codes = map[string]uint8{}
		}
		c = uint8(len(t.kinds))
		t.codes[kind] = c
		t.kinds = append(t.kinds, kind)
	}
	return c
}

// counterList is the counters made up to some moment (Meter.list). A
// Counters' org, site and kind never change once made, and later ones go
// past n, so a pass over a million sites reads a counterList without
// Meter.mu.
type counterList struct {
	chunks []*[counterChunk]Counters
	n      int      // the Counters made: the first n of chunks
	kinds  []string // kind names by code
}

// at is counter number i.
func (l counterList) at(i int) *Counters {
	return &l.chunks[i/counterChunk][i%counterChunk]
}

// all yields every counter of l, in creation order, with its number.
func (l counterList) all() iter.Seq2[int, *Counters] {
	return func(yield func(int, *Counters) bool) {
		for i := range l.n {
			if !yield(i, l.at(i)) {
				return
			}
		}
	}
}

// kind is c's kind name.
func (l counterList) kind(c *Counters) string { return l.kinds[c.kind] }
