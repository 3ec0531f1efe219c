// Package cowmap is an immutable map from strings to values whose versions
// share structure: a write copies the one shard its key falls in, not the
// whole map, so with n entries it costs O(n/1024) instead of O(n) once n is
// past 128 thousand (O(128) below that), and versions that differ by a few keys share all other shards.
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

// A map of n entries has about n/128 shards (a power of two, at most
// 1024), so a small map costs one shard and a registry of a million sites
// copies about a thousand entries per write. A write that takes the map past
// 128 entries per shard rebuilds it with twice the shards: O(n) then, O(1)
// amortized.
const (
	maxShardBits = 10
	perShard     = 128
)

var seed = maphash.MakeSeed()

// Map is one version of the map. The zero Map is empty and ready to use.
// A Map is a small value; copying it copies no entries.
type Map[V any] struct {
	s    []map[string]V // len 1<<bits; nil: empty. A nil shard is empty too.
	bits uint8
	n    int
}

func (m Map[V]) shard(k string) map[string]V {
	return m.s[maphash.String(seed, k)>>(64-m.bits)&(1<<m.bits-1)]
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
	return m.s[maphash.Bytes(seed, k)>>(64-m.bits)&(1<<m.bits-1)][string(k)]
}

// All yields every entry, in no particular order.
func (m Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, shard := range m.s {
			for k, v := range shard {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// Edit starts the next version. The Editor's writes never show in m.
func (m Map[V]) Edit() *Editor[V] {
	e := &Editor[V]{m: Map[V]{bits: m.bits, n: m.n}}
	if m.s == nil {
		e.m.s = make([]map[string]V, 1)
	} else {
		e.m.s = slices.Clone(m.s)
	}
	e.owned = make([]uint64, (len(e.m.s)+63)/64)
	return e
}

// Editor derives a new version from a Map: each shard it writes to is
// copied once, at its first write. It is not safe for concurrent use.
type Editor[V any] struct {
	m     Map[V]   // shards not in owned are shared with the base
	owned []uint64 // shards already copied (bit set)
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

// own returns k's shard, copied on its first write in this edit.
func (e *Editor[V]) own(k string) map[string]V {
	i := maphash.String(seed, k) >> (64 - e.m.bits) & (1<<e.m.bits - 1)
	if e.owned[i/64]&(1<<(i%64)) == 0 {
		old := e.m.s[i]
		next := make(map[string]V, len(old)+1)
		for k, v := range old {
			next[k] = v
		}
		e.Copied += len(old)
		e.m.s[i] = next
		e.owned[i/64] |= 1 << (i % 64)
	}
	return e.m.s[i]
}

// grow rebuilds the map with twice the shards, all owned by the edit.
func (e *Editor[V]) grow() {
	bits := e.m.bits + 1
	s := make([]map[string]V, 1<<bits)
	for i := range s {
		s[i] = make(map[string]V, perShard/2)
	}
	for _, shard := range e.m.s {
		for k, v := range shard {
			s[maphash.String(seed, k)>>(64-bits)&(1<<bits-1)][k] = v
		}
		e.Copied += len(shard)
	}
	e.m.s, e.m.bits = s, bits
	e.owned = make([]uint64, (len(s)+63)/64)
	for i := range e.owned {
		e.owned[i] = ^uint64(0)
	}
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
