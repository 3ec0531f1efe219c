package meter

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

// ReplaceStorage makes s the whole picture of storage: the sites in it
// store what it says, every other site stores nothing from now on. A site
// that could not be measured this time belongs in s with its last value.
func (m *Meter) ReplaceStorage(s StorageMap) {
	for k, e := range s {
		m.Counters(k[0], k[1], e.kind).SetStorage(e.bytes)
	}
	for _, c := range m.list() {
		if _, ok := s[[2]string{c.org, c.site}]; !ok {
			c.storage.Store(0)
		}
	}
	m.mu.Lock()
	m.storageMeasured = true
	m.mu.Unlock()
}

// list is every counter made so far. m.all is append-only and the elements
// up to its length never change: the passes over a million sites below
// read them without m.mu, which a request serving a site for the first
// time takes (Counters).
func (m *Meter) list() []*Counters {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.all
}

// Storage returns the bytes (org, site) stores, as last measured.
func (m *Meter) Storage(org, site string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.counters[[2]string{org, site}]; c != nil {
		return c.storage.Load()
	}
	return 0
}

// OrgStorage returns the bytes all of org's sites store, as last measured.
func (m *Meter) OrgStorage(org string) int64 {
	m.mu.Lock()
	cs := m.ofOrg[org] // append-only, as m.all
	m.mu.Unlock()
	var n int64
	for _, c := range cs {
		n += c.storage.Load()
	}
	return n
}

// StorageByOrg returns the bytes every org stores, as last measured, in one
// pass over the counters; ok is false until storage has been measured once
// since start (ReplaceStorage), when the figures are not known yet.
func (m *Meter) StorageByOrg() (byOrg map[string]int64, ok bool) {
	m.mu.Lock()
	measured := m.storageMeasured
	m.mu.Unlock()
	if !measured {
		return nil, false
	}
	byOrg = map[string]int64{}
	for _, c := range m.list() {
		if n := c.storage.Load(); n != 0 {
			byOrg[c.org] += n
		}
	}
	return byOrg, true
}
