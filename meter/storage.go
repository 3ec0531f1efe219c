package meter

import "github.com/tollgate-edge/tollgate/internal/pace"

// StorageMap is what every (org, site) stores now, for ReplaceStorage.
type StorageMap map[[2]string]storageEntry

type storageEntry struct {
	kind  string
	bytes int64
}

// Get returns what Set recorded.
func (s StorageMap) Get(org, site string) (kind string, n int64, ok bool) {
	e, ok := s[[2]string{org, site}]
	return e.kind, e.bytes, ok
}

// Set records that site of org, of kind, stores n bytes.
func (s StorageMap) Set(org, site, kind string, n int64) {
	s[[2]string{org, site}] = storageEntry{kind: kind, bytes: n}
}

// Each calls set with every entry of s, for ReplaceStorage.
func (s StorageMap) Each(set func(org, site, kind string, n int64)) {
	for k, e := range s {
		set(k[0], k[1], e.kind, e.bytes)
	}
}

// ReplaceStorage makes the sites each sets the whole picture of storage:
// they store what it says, every other site stores nothing from now on. A
// site that could not be measured this time belongs in it with its last
// value. The picture is handed over entry by entry, not as a map: at a
// million sites the map would be a hundred megabytes.
func (m *Meter) ReplaceStorage(each func(set func(org, site, kind string, n int64))) {
	m.mu.Lock()
	m.storageGen++
	gen := m.storageGen
	m.mu.Unlock()
	each(func(org, site, kind string, n int64) {
		c := m.Counters(org, site, kind)
		c.SetStorage(n)
		c.storageGen.Store(gen)
	})
	var p pace.Pacer
	for _, c := range m.list().all() {
		p.Step()
		if c.storageGen.Load() != gen {
			c.storage.Store(0)
		}
	}
	m.mu.Lock()
	m.storageMeasured = true
	m.mu.Unlock()
}

// Reserve makes room in the meter's index for n counters in all, so that
// making them grows it at most once (a million sites' counters, made one
// by one, grew it twenty times, the last ones rehashing half a million
// counters each under the lock a request serving a new site waits for).
func (m *Meter) Reserve(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.table.reserve(n)
}

// list is every counter made so far: the passes over a million sites
// read it without m.mu, which a request serving a site for the first time
// takes (Counters).
func (m *Meter) list() counterList {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.table.counterList
}

// Storage returns the bytes (org, site) stores, as last measured.
func (m *Meter) Storage(org, site string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, _ := m.table.find(org, site); c != nil {
		return c.storage.Load()
	}
	return 0
}

// OrgStorage returns the bytes all of org's sites store, as last measured:
// a pass over every counter, without the meter's lock (an index by org
// would cost a map entry per org, tens of megabytes at a million).
func (m *Meter) OrgStorage(org string) int64 {
	var n int64
	for _, c := range m.list().all() {
		if c.org == org {
			n += c.storage.Load()
		}
	}
	return n
}

// StorageByOrgOf returns the bytes stored by every org need reports true
// for (every org when need is nil), as last measured, in one pass over the
// counters; ok is false until storage has been measured once since start
// (ReplaceStorage), when the figures are not known yet. An org that stores
// nothing is left out (a missing org reads 0). need is asked, without the
// meter's lock, for each site storing something whose org is not in the
// map yet. The map is made at the size of the previous answer: at a
// million orgs a pass allocates it once, not in a series of growths that
// leave each smaller map as garbage.
func (m *Meter) StorageByOrgOf(need func(org string) bool) (byOrg map[string]int64, ok bool) {
	m.mu.Lock()
	measured, hint := m.storageMeasured, m.storageOrgs
	m.mu.Unlock()
	if !measured {
		return nil, false
	}
	byOrg = make(map[string]int64, hint)
	for _, c := range m.list().all() {
		n := c.storage.Load()
		if n == 0 {
			continue
		}
		if sum, have := byOrg[c.org]; have {
			byOrg[c.org] = sum + n
		} else if need == nil || need(c.org) {
			byOrg[c.org] = n
		}
	}
	m.mu.Lock()
	m.storageOrgs = len(byOrg)
	m.mu.Unlock()
	return byOrg, true
}
