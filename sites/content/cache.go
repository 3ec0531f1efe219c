package content

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// Cache is the content cache shared by all sites: an LRU over every site's
// files with one byte budget (sites.Config.CacheBytes). It also remembers misses
// (not found, directory) for the revalidation delay, so a flood of requests
// for absent paths costs no I/O. It is safe for concurrent use.
type Cache struct {
	cfg sites.Config

	mu   sync.Mutex
	used int64
	lru  Entry // sentinel of a ring of entries, most recently used first (lru.next)
	n    int64 // entries in the ring

	hits, misses, evictions atomic.Int64
}

// Space holds one source's entries, keyed by URL path: a directory's, or
// those of one commit of a repository.
type Space struct {
	entries map[string]*Entry
	dropped bool
}

// Entry is what the cache remembers for one URL path of a source: a file,
// or a miss (ErrFileNotFound, ErrIsDir).
type Entry struct {
	space   *Space
	key     string
	name    string // file name under the source root, for revalidation
	file    *File  // nil for a remembered miss
	err     error  // ErrFileNotFound or ErrIsDir for a miss
	cost    int64
	checked atomic.Int64 // unix nanoseconds of the last check against the source
	prev    *Entry       // ring links, guarded by Cache.mu
	next    *Entry
}

// ring returns the LRU ring, initializing its sentinel on first use.
func (c *Cache) ring() *Entry {
	if c.lru.next == nil {
		c.lru.next, c.lru.prev = &c.lru, &c.lru
	}
	return &c.lru
}

// unlink takes e out of the ring.
func unlink(e *Entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// pushFront puts e first in the ring.
func (c *Cache) pushFront(e *Entry) {
	r := c.ring()
	e.prev, e.next = r, r.next
	r.next.prev = e
	r.next = e
}

// entryOverhead approximates the memory of an entry beside its bodies.
const entryOverhead = 256

// NewCache returns an empty cache; cfg is completed with defaults.
func NewCache(cfg sites.Config) *Cache {
	cfg.Defaults()
	return &Cache{cfg: cfg}
}

// Stats are the cache's counters since start, for metrics.
type Stats struct {
	Hits, Misses, Evictions, Bytes, Entries int64
}

// Stats returns the current counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	used, n := c.used, c.n
	c.mu.Unlock()
	return Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(), Bytes: used, Entries: n}
}

// MaxFile is the largest file kept in memory (sites.Config.MaxCachedFile):
// a source streams larger ones (NewStream).
func (c *Cache) MaxFile() int64 { return c.cfg.MaxCachedFile }

// NewSpace returns an empty space for a source's entries.
func (c *Cache) NewSpace() *Space { return &Space{entries: map[string]*Entry{}} }

// Lookup finds key in s and marks it recently used; nil when s holds
// nothing for key. It does not allocate, and counts neither a hit nor a
// miss: the source decides whether the entry answers (CountHit, CountMiss).
func (c *Cache) Lookup(s *Space, key []byte) *Entry {
	c.mu.Lock()
	e := s.entries[string(key)]
	if e != nil {
		unlink(e)
		c.pushFront(e)
	}
	c.mu.Unlock()
	return e
}

// Insert stores a loaded file f, or a miss err (ErrFileNotFound, ErrIsDir),
// under key in s, as checked against the source at time at. It replaces
// what was there and evicts the least recently used entries past the
// budget; an entry larger than the whole budget is not kept, nor one of a
// dropped space.
func (c *Cache) Insert(s *Space, key string, f *File, err error, at time.Time) {
	c.insert(s, key, "", f, err, at.UnixNano())
}

// insert is Insert with the file's name under the source root, for a
// source that revalidates its entries (a directory).
func (c *Cache) insert(s *Space, key, name string, f *File, err error, now int64) {
	e := &Entry{space: s, key: key, name: name, file: f, err: err, cost: entryOverhead + 2*int64(len(key))}
	if f != nil {
		e.cost += int64(len(f.Body) + len(f.Gzip) + len(f.Brotli))
	}
	e.checked.Store(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.dropped {
		return
	}
	if old := s.entries[key]; old != nil {
		c.remove(old)
	}
	if e.cost > c.cfg.CacheBytes {
		return
	}
	c.pushFront(e)
	c.n++
	s.entries[key] = e
	c.used += e.cost
	for c.used > c.cfg.CacheBytes {
		back := c.ring().prev
		if back == &c.lru {
			break
		}
		c.remove(back)
		c.evictions.Add(1)
	}
}

// remove unlinks e; c.mu must be held.
func (c *Cache) remove(e *Entry) {
	unlink(e)
	c.n--
	delete(e.space.entries, e.key)
	c.used -= e.cost
}

// DropSpace forgets every entry of s, a source closed or replaced (a
// repository's previous commit); later Inserts into s are ignored.
func (c *Cache) DropSpace(s *Space) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range s.entries {
		unlink(e)
		c.n--
		c.used -= e.cost
	}
	s.entries = map[string]*Entry{}
	s.dropped = true
}

// CountHit counts a request a source answered from the cache.
func (c *Cache) CountHit() { c.hits.Add(1) }

// CountMiss counts a request a source answered from its files.
func (c *Cache) CountMiss() { c.misses.Add(1) }

// Result is what the entry remembers: a file, or a miss.
func (e *Entry) Result() (*File, error) { return e.file, e.err }

// RecheckDue reports whether e is a remembered miss last checked against its
// source ttl or more before at; if so it counts as checked at at, so of
// concurrent callers one gets true and rechecks it.
func (e *Entry) RecheckDue(at time.Time, ttl time.Duration) bool {
	checked, now := e.checked.Load(), at.UnixNano()
	return e.file == nil && now-checked >= int64(ttl) && e.checked.CompareAndSwap(checked, now)
}
