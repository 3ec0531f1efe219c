// Package cowmap is an immutable map from strings to values whose versions
// share structure: a write copies the one small shard its key falls in (and
// the block of 64 shard pointers above it), not the map, so it costs about
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
)

// A map of n entries has about n/perShard shards (a power of two, at most
// 1<<maxShardBits), grouped in blocks of 64. A write copies one shard
// (perShard entries), one block (64 pointers) and the list of blocks (n/2048
// pointers); a batch of k writes copies at most k shards and blocks. A
// write that takes the map past perShard entries per shard rebuilds it with
// twice the shards: O(n) then, O(1) amortized.
const (
	maxShardBits = 16 // 65,536 shards: 32 entries each at two million
	perShard     = 32
	blockBits    = 6
	blockSize    = 1 << blockBits
)

var seed = maphash.MakeSeed()

type block[V any] [blockSize]map[string]V

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

func (m Map[V]) shard(k string) map[string]V {
	if m.bits == 0 {
		return m.b[0][0] // one shard: no hash to compute
	}
	b, s := m.index(maphash.String(seed, k))
	return m.b[b][s]
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
	v, ok := m.shard(k)[k]
	return v, ok
}

// GetBytes is Get with the key as bytes; it does not allocate.
func (m Map[V]) GetBytes(k []byte) V {
	if m.n == 0 {
		var zero V
		return zero
	}
	if m.bits == 0 {
		return m.b[0][0][string(k)]
	}
	b, s := m.index(maphash.Bytes(seed, k))
	return m.b[b][s][string(k)]
}

// All yields every entry, in no particular order.
func (m Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, blk := range m.b {
			for _, shard := range blk {
				for k, v := range shard {
					if !yield(k, v) {
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
func (e *Editor[V]) Get(k string) V { return e.m.shard(k)[k] }

// Lookup returns the value of k as edited so far and whether it is present.
func (e *Editor[V]) Lookup(k string) (V, bool) {
	v, ok := e.m.shard(k)[k]
	return v, ok
}

// Len is the number of entries as edited so far.
func (e *Editor[V]) Len() int { return e.m.n }

// Set sets k to v.
func (e *Editor[V]) Set(k string, v V) {
	shard := e.own(k)
	if _, ok := shard[k]; !ok {
		e.m.n++
	}
	shard[k] = v
	if e.m.n > perShard<<e.m.bits && e.m.bits < maxShardBits {
		e.grow()
	}
}

// Delete removes k if present.
func (e *Editor[V]) Delete(k string) {
	if _, ok := e.Lookup(k); !ok {
		return
	}
	delete(e.own(k), k)
	e.m.n--
}

// own returns k's shard, copied (with its block) on its first write in
// this edit.
func (e *Editor[V]) own(k string) map[string]V {
	b, s := e.m.index(maphash.String(seed, k))
	if e.all {
		if e.m.b[b][s] == nil {
			e.m.b[b][s] = make(map[string]V)
		}
		return e.m.b[b][s]
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
		next := make(map[string]V, len(old)+1)
		for k, v := range old {
			next[k] = v
		}
		e.Copied += len(old)
		e.m.b[b][s] = next
		mask |= 1 << s
	}
	e.owned[b] = mask
	return e.m.b[b][s]
}

// grow rebuilds the map with twice the shards, all owned by the edit.
func (e *Editor[V]) grow() {
	next := Map[V]{bits: e.m.bits + 1, n: e.m.n}
	next.b = make([]*block[V], max(1, (1<<next.bits)/blockSize))
	for i := range next.b {
		next.b[i] = new(block[V])
	}
	for k, v := range e.m.All() {
		b, s := next.index(maphash.String(seed, k))
		if next.b[b][s] == nil {
			next.b[b][s] = make(map[string]V, perShard)
		}
		next.b[b][s][k] = v
		e.Copied++
	}
	e.m, e.owned, e.all = next, nil, true
}

// Map returns the edited version. The Editor must not be used afterwards.
func (e *Editor[V]) Map() Map[V] {
	if e.m.n == 0 {
		return Map[V]{}
	}
	return e.m
}

// From builds a Map holding the entries of src.
func From[V any](src map[string]V) Map[V] {
	e := Map[V]{}.Edit()
	for k, v := range src {
		e.Set(k, v)
	}
	return e.Map()
}
