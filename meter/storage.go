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
	m.mu.Lock()
	defer m.mu.Unlock()
	m.storageMeasured = true
	for k, c := range m.counters {
		if _, ok := s[k]; !ok {
			c.storage.Store(0)
		}
	}
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
	defer m.mu.Unlock()
	var n int64
	for k, c := range m.counters {
		if k[0] == org {
			n += c.storage.Load()
		}
	}
	return n
}

// StorageByOrg returns the bytes every org stores, as last measured, in one
// pass over the counters; ok is false until storage has been measured once
// since start (ReplaceStorage), when the figures are not known yet.
func (m *Meter) StorageByOrg() (byOrg map[string]int64, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.storageMeasured {
		return nil, false
	}
	byOrg = map[string]int64{}
	for k, c := range m.counters {
		if n := c.storage.Load(); n != 0 {
			byOrg[k[0]] += n
		}
	}
	return byOrg, true
}
