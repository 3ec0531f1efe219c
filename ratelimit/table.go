// Package ratelimit holds tollgate's request-rate limiters: token buckets
// per key in a table of fixed size (per client address of a site, per admin
// token), the header fields of a refusal (Retry-After and the IETF httpapi
// draft's RateLimit and RateLimit-Policy), and the counter of refused
// requests. It does no I/O, and a check allocates nothing.
package ratelimit

import (
	"hash/maphash"
	"math"
	"math/bits"
	"net/netip"
	"sync"
	"time"
)

// Table is a fixed number of token buckets keyed by 64-bit hashes (Key),
// like nginx's limit_req zone: its memory is set when it is made and never
// grows, however many keys strangers invent. The buckets are split over
// shards, each with its own mutex, and within a shard into sets of eight;
// a new key takes a free bucket of its set or the one used longest ago.
// An evicted key comes back with a full bucket: to evict an active client,
// others must bring eight new keys into its set (one of Size/8) between
// two of its requests.
//
// It is safe for concurrent use.
type Table struct {
	rate    float64 // tokens per second
	burst   float64
	setMask uint64 // sets per shard - 1
	shards  [numShards]shard
	epoch   time.Time
}

// ways is the number of buckets a key may use (its set); numShards the
// number of mutexes.
const (
	ways      = 8
	numShards = 64
	// MinSize is the smallest table: one set per shard.
	MinSize = ways * numShards
	// BucketBytes is the memory of one bucket.
	BucketBytes = 24
)

type shard struct {
	mu    sync.Mutex
	slots []bucket
	_     [32]byte // a shard per cache line: shards do not share one
}

// bucket is one key's token bucket; key 0 marks a free one.
type bucket struct {
	key    uint64
	last   int64 // nanoseconds since the table's epoch of the last refill
	tokens float64
}

// NewTable makes a table of at least size buckets (rounded up to a power
// of two, at least MinSize), each refilled at rps tokens per second up to
// burst. rps must be positive and burst at least 1.
func NewTable(size int, rps float64, burst int) *Table {
	size = max(size, MinSize)
	size = 1 << bits.Len(uint(size-1))
	perShard := size / numShards
	t := &Table{rate: rps, burst: float64(burst), setMask: uint64(perShard/ways - 1), epoch: time.Now()}
	for i := range t.shards {
		t.shards[i].slots = make([]bucket, perShard)
	}
	return t
}

// Size is the number of buckets.
func (t *Table) Size() int { return len(t.shards[0].slots) * numShards }

// Len is the number of buckets in use (for tests and debugging; it takes
// every shard's mutex).
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, b := range s.slots {
			if b.key != 0 {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Allow takes a token from key's bucket at now and reports whether there
// was one. now should carry a monotonic reading (time.Now, a request's
// time); it does not allocate.
func (t *Table) Allow(key uint64, now time.Time) bool {
	if key == 0 {
		key = 1 // 0 marks a free bucket
	}
	ns := int64(now.Sub(t.epoch))
	s := &t.shards[key%numShards]
	set := ((key / numShards) & t.setMask) * ways
	s.mu.Lock()
	slots := s.slots[set : set+ways]
	victim := -1
	for i := range slots {
		b := &slots[i]
		if b.key == key {
			ok := b.take(ns, t.rate, t.burst)
			s.mu.Unlock()
			return ok
		}
		switch {
		case b.key == 0:
			if victim < 0 || slots[victim].key != 0 {
				victim = i
			}
		case victim < 0 || slots[victim].key != 0 && b.last < slots[victim].last:
			victim = i
		}
	}
	slots[victim] = bucket{key: key, last: ns, tokens: t.burst - 1}
	s.mu.Unlock()
	return true
}

// take refills b up to ns and takes a token if there is one.
func (b *bucket) take(ns int64, rate, burst float64) bool {
	if d := ns - b.last; d > 0 {
		b.tokens = min(burst, b.tokens+float64(d)*rate/1e9)
		b.last = ns
	}
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// Keys hashes what a table is keyed by, with a seed of its own (keys are
// not predictable from outside the process). The zero value is not usable:
// use NewKeys.
type Keys struct{ seed maphash.Seed }

// NewKeys returns a key hasher with a random seed.
func NewKeys() Keys { return Keys{seed: maphash.MakeSeed()} }

// String hashes s, e.g. a site's id, into a scope for Addr.
func (k Keys) String(s string) uint64 { return maphash.String(k.seed, s) }

// Bytes hashes b (a host name) into a scope for Addr.
func (k Keys) Bytes(b []byte) uint64 { return maphash.Bytes(k.seed, b) }

// Addr is the key of a client address within scope (a site, a listener).
func (k Keys) Addr(scope uint64, a netip.Addr) uint64 {
	var buf [24]byte
	ip := a.As16()
	copy(buf[:16], ip[:])
	for i := range 8 {
		buf[16+i] = byte(scope >> (8 * i))
	}
	return maphash.Bytes(k.seed, buf[:])
}

// RetryAfter is how many whole seconds a client refused by a bucket
// refilled at rps waits at most for its next token: 1/rps, rounded up.
func RetryAfter(rps float64) int {
	return max(1, int(math.Ceil(1/rps)))
}
