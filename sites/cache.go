package sites

import (
	"sync"
	"sync/atomic"
)

// Cache is the content cache shared by all sites: an LRU over every site's
// files with one byte budget (Config.CacheBytes). It also remembers misses
// (not found, directory) for the revalidation delay, so a flood of requests
// for absent paths costs no I/O. It is safe for concurrent use.
type Cache struct {
	cfg Config

	mu   sync.Mutex
	used int64
	lru  entry // sentinel of a ring of entries, most recently used first (lru.next)
	n    int64 // entries in the ring

	hits, misses, evictions atomic.Int64
}

// space holds one source's entries, keyed by URL path.
type space struct {
	entries map[string]*entry
	dropped bool
}

type entry struct {
	space   *space
	key     string
	name    string // file name under the source root, for revalidation
	file    *File  // nil for a remembered miss
	err     error  // ErrFileNotFound or ErrIsDir for a miss
	cost    int64
	checked atomic.Int64 // unix nanoseconds of the last check against the source
	prev    *entry       // ring links, guarded by Cache.mu
	next    *entry
}

// ring returns the LRU ring, initializing its sentinel on first use.
func (c *Cache) ring() *entry {
	if c.lru.next == nil {
		c.lru.next, c.lru.prev = &c.lru, &c.lru
	}
	return &c.lru
}

// unlink takes e out of the ring.
func unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// pushFront puts e first in the ring.
func (c *Cache) pushFront(e *entry) {
	r := c.ring()
	e.prev, e.next = r, r.next
	r.next.prev = e
	r.next = e
}

// entryOverhead approximates the memory of an entry beside its bodies.
const entryOverhead = 256

// NewCache returns an empty cache; cfg is completed with defaults.
func NewCache(cfg Config) *Cache {
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

func (c *Cache) newSpace() *space { return &space{entries: map[string]*entry{}} }

// lookup finds key in s and marks it recently used. It does not allocate.
func (c *Cache) lookup(s *space, key []byte) *entry {
	c.mu.Lock()
	e := s.entries[string(key)]
	if e != nil {
		unlink(e)
		c.pushFront(e)
	}
	c.mu.Unlock()
	return e
}

// insert stores a loaded file (or a miss) under key, replacing what was there,
// and evicts the least recently used entries past the budget. An entry larger
// than the whole budget is not kept.
func (c *Cache) insert(s *space, key, name string, f *File, err error, now int64) {
	e := &entry{space: s, key: key, name: name, file: f, err: err, cost: entryOverhead + 2*int64(len(key))}
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
func (c *Cache) remove(e *entry) {
	unlink(e)
	c.n--
	delete(e.space.entries, e.key)
	c.used -= e.cost
}

// dropSpace forgets every entry of a closed source.
func (c *Cache) dropSpace(s *space) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range s.entries {
		unlink(e)
		c.n--
		c.used -= e.cost
	}
	s.entries = map[string]*entry{}
	s.dropped = true
}
