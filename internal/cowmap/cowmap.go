// Package cowmap is an immutable map from strings to values whose versions
// share structure: a write copies the one small shard its key falls in (and
// the block of 64 shards above it), not the map, so it costs about
// the same with a hundred entries or two million, and versions that differ
// by a few keys share everything else.
//
// The registry's snapshots (package sites) and the proxy's routing table are
// built on it: readers look keys up in whatever version they hold, without
// locks and without allocating, while a writer derives the next version.
package cowmap

import (
	"hash/maphash"
	"iter"
	"slices"
	"strings"
)

// A map of n entries has about n/perShard shards (a power of two, at most
// 1<<maxShardBits), grouped in blocks of 64. A write copies one shard
// (perShard entries), one block (64 slice headers) and the list of blocks
// (n/2048 pointers); a batch of k writes copies at most k shards and blocks. A
// write that takes the map past perShard entries per shard rebuilds it with
// twice the shards: O(n) then, O(1) amortized.
const (
	maxShardBits = 16 // 65,536 shards: 32 entries each at two million
	perShard     = 32
	blockBits    = 6
	blockSize    = 1 << blockBits
)

var seed = maphash.MakeSeed()

// entry is one key and its value. A shard is a slice of them sorted by
// key: 24 bytes an entry for a pointer value, where a Go map of a shard's
// size holds two to three times that in empty slots and headers.
type entry[V any] struct {
	k string
	v V
}

type block[V any] [blockSize][]entry[V]

// Map is one version of the map. The zero Map is empty and ready to use.
// A Map is a small value; copying it copies no entries.
type Map[V any] struct {
	b    []*block[V] // max(1, shards/64) blocks; nil: empty. A nil shard is empty too.
	bits uint8       // 1<<bits shards
	n    int
}

func (m Map[V]) index(h uint64) (blk, shard uint64) {
	i := h >> (64 - m.bits) & (1<<m.bits - 1)
	return i >> blockBits, i & (blockSize - 1)
}

func (m Map[V]) shard(k string) []entry[V] {
	if m.bits == 0 {
		return m.b[0][0] // one shard: no hash to compute
	}
	b, s := m.index(maphash.String(seed, k))
	return m.b[b][s]
}

// search returns the position of k in the sorted shard s and whether it
// is there.
func search[V any](s []entry[V], k string) (int, bool) {
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s[m].k < k {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(s) && s[lo].k == k
}

// Len is the number of entries.
func (m Map[V]) Len() int { return m.n }

// Get returns the value of k, or V's zero value when k is absent.
func (m Map[V]) Get(k string) V {
	v, _ := m.Lookup(k)
	return v
}

// Lookup returns the value of k and whether k is present.
func (m Map[V]) Lookup(k string) (V, bool) {
	if m.n == 0 {
		var zero V
		return zero, false
	}
	s := m.shard(k)
	if i, ok := search(s, k); ok {
		return s[i].v, true
	}
	var zero V
	return zero, false
}

// GetBytes is Get with the key as bytes; it does not allocate.
func (m Map[V]) GetBytes(k []byte) V {
	var zero V
	if m.n == 0 {
		return zero
	}
	s := m.b[0][0]
	if m.bits != 0 {
		b, i := m.index(maphash.Bytes(seed, k))
		s = m.b[b][i]
	}
	lo, hi := 0, len(s)
	for lo < hi { // search, comparing without converting k
		m := int(uint(lo+hi) >> 1)
		if s[m].k < string(k) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(s) && s[lo].k == string(k) {
		return s[lo].v
	}
	return zero
}

// All yields every entry, in no particular order.
func (m Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, blk := range m.b {
			for _, shard := range blk {
				for _, e := range shard {
					if !yield(e.k, e.v) {
						return
					}
				}
			}
		}
	}
}

// Edit starts the next version. The Editor's writes never show in m.
func (m Map[V]) Edit() *Editor[V] {
	e := &Editor[V]{m: Map[V]{bits: m.bits, n: m.n}}
	if m.b == nil {
		e.m.b = []*block[V]{new(block[V])}
		e.all = true
	} else {
		e.m.b = slices.Clone(m.b)
	}
	return e
}

// Editor derives a new version from a Map: each block and shard it writes
// to is copied once, at its first write. It is not safe for concurrent use.
type Editor[V any] struct {
	m Map[V] // blocks and shards not owned are shared with the base
	// owned maps a block this edit copied to the shards of it the edit
	// copied (bit set); with all, everything is the edit's own.
	owned map[uint64]uint64
	all   bool
	// Copied counts the entries copied so far: the cost of the edit.
	Copied int
}

// Get returns the value of k as edited so far.
func (e *Editor[V]) Get(k string) V {
	v, _ := e.Lookup(k)
	return v
}

// Lookup returns the value of k as edited so far and whether it is present.
func (e *Editor[V]) Lookup(k string) (V, bool) {
	s := e.m.shard(k)
	if i, ok := search(s, k); ok {
		return s[i].v, true
	}
	var zero V
	return zero, false
}

// Len is the number of entries as edited so far.
func (e *Editor[V]) Len() int { return e.m.n }

// Set sets k to v.
func (e *Editor[V]) Set(k string, v V) {
	b, s := e.own(k)
	shard := e.m.b[b][s]
	i, ok := search(shard, k)
	if ok {
		shard[i].v = v
		return
	}
	e.m.b[b][s] = slices.Insert(shard, i, entry[V]{k, v})
	e.m.n++
	if e.m.n > perShard<<e.m.bits && e.m.bits < maxShardBits {
		e.grow()
	}
}

// Delete removes k if present.
func (e *Editor[V]) Delete(k string) {
	if _, ok := e.Lookup(k); !ok {
		return
	}
	b, s := e.own(k)
	shard := e.m.b[b][s]
	i, _ := search(shard, k)
	e.m.b[b][s] = slices.Delete(shard, i, i+1)
	e.m.n--
}

// own returns the block and shard index of k, the shard copied (with its
// block) on its first write in this edit, with room for one more entry.
func (e *Editor[V]) own(k string) (blk, shard uint64) {
	b, s := e.m.index(maphash.String(seed, k))
	if e.all {
		return b, s
	}
	if e.owned == nil {
		e.owned = make(map[uint64]uint64)
	}
	mask, ok := e.owned[b]
	if !ok {
		cp := *e.m.b[b]
		e.m.b[b] = &cp
	}
	if mask&(1<<s) == 0 {
		old := e.m.b[b][s]
		next := make([]entry[V], len(old), len(old)+1)
		copy(next, old)
		e.Copied += len(old)
		e.m.b[b][s] = next
		mask |= 1 << s
	}
	e.owned[b] = mask
	return b, s
}

// grow rebuilds the map with twice the shards, all owned by the edit.
func (e *Editor[V]) grow() {
	next := build(e.m.bits+1, e.m.n, e.m.All())
	e.Copied += next.n
	e.m, e.owned, e.all = next, nil, true
}

// Build makes a Map of the n entries all yields, sized for them at once:
// each shard is one allocation of its entries. all is iterated twice and
// must yield n distinct keys.
func Build[V any](n int, all iter.Seq2[string, V]) Map[V] {
	bits := uint8(0)
	for n > perShard<<bits && bits < maxShardBits {
		bits++
	}
	if n == 0 {
		return Map[V]{}
	}
	return build(bits, n, all)
}

func build[V any](bits uint8, n int, all iter.Seq2[string, V]) Map[V] {
	m := Map[V]{bits: bits, n: n}
	m.b = make([]*block[V], max(1, (1<<bits)/blockSize))
	counts := make([]int32, len(m.b)*blockSize)
	for k := range all {
		b, s := m.index(maphash.String(seed, k))
		counts[b<<blockBits|s]++
	}
	for i := range m.b {
		m.b[i] = new(block[V])
		for s := range m.b[i] {
			if c := counts[i<<blockBits|s]; c > 0 {
				m.b[i][s] = make([]entry[V], 0, c)
			}
		}
	}
	for k, v := range all {
		b, s := m.index(maphash.String(seed, k))
		m.b[b][s] = append(m.b[b][s], entry[V]{k, v})
	}
	for _, blk := range m.b {
		for _, shard := range blk {
			slices.SortFunc(shard, func(x, y entry[V]) int { return strings.Compare(x.k, y.k) })
		}
	}
	return m
}

// Map returns the edited version. The Editor must not be used afterwards.
// Shards the edit grew beyond their entries are copied to their size.
func (e *Editor[V]) Map() Map[V] {
	if e.m.n == 0 {
		return Map[V]{}
	}
	if e.all {
		for _, blk := range e.m.b {
			for s := range blk {
				clip(blk, s)
			}
		}
		return e.m
	}
	for b, mask := range e.owned {
		for s := range blockSize {
			if mask&(1<<s) != 0 {
				clip(e.m.b[b], s)
			}
		}
	}
	return e.m
}

// clip copies shard s of blk to its size when it has room for more than
// one entry and an eighth.
func clip[V any](blk *block[V], s int) {
	if shard := blk[s]; cap(shard) > len(shard)+1+len(shard)/8 {
		blk[s] = slices.Clone(shard)
	}
}

// From builds a Map holding the entries of src.
func From[V any](src map[string]V) Map[V] {
	return Build(len(src), func(yield func(string, V) bool) {
		for k, v := range src {
			if !yield(k, v) {
				return
			}
		}
	})
}
