package meter

// Collecting a flush's batches from the counters.

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/internal/pace"
)

// storageEvery is how often the storage accrued by n counters is
// written: every minute up to 60,000 counters, then every millisecond per
// counter (a million sites: every 16m40s), at most every hour; and at
// every hour boundary and at Close. Storage is integrated at every flush;
// only the writes are spaced: a delta per site per minute would be a
// million sites' main work and their store's (Redis applies each org's
// delta as a script of a dozen commands). Past a minute, the writes
// average at most about a thousand deltas a second. A kill loses the
// storage byte-seconds accrued since the last write; traffic counters are
// written every flush.
func storageEvery(n int) time.Duration {
	return min(time.Hour, max(time.Minute, time.Duration(n)*time.Millisecond))
}

// collect swaps every counter to zero and returns the deltas as batches (none
// when nothing was used). Storage is integrated over the time since the
// previous collect and written as storageEvery says; with final, all of it.
// When an hour boundary passed since the previous collect, the storage
// accrued before it comes first, in a batch of that collect's time (its
// hour).
//
// While older batches still wait for the sink (backlogged), storage is not
// written, except with final: it keeps accruing in the counters, which
// costs no memory, where a million sites' deltas would take 2,000 batches
// of the backlog and crowd out the traffic batches that MaxPending keeps.
// Storage accrued over an hour boundary during a backlog goes to the hour
// it is written in.
func (m *Meter) collect(final, backlogged bool) []*Batch {
	now := m.now()
	prev := m.lastFlush
	elapsed := now.Sub(prev)
	m.lastFlush = now
	list := m.list()
	var out []*Batch
	writeStorage := final || !backlogged
	if writeStorage && !now.Truncate(time.Hour).Equal(prev.Truncate(time.Hour)) {
		out = m.appendBatch(out, prev, m.storageDeltas(list, nil))
		m.lastStorage = prev
	}
	var deltas []Delta
	var p pace.Pacer // a million sites: give the core back now and then
	for _, c := range list.all() {
		p.Step()
		d := Delta{Org: c.org, Site: c.site, Values: Values{
			EgressBytes:  c.egress.Swap(0),
			IngressBytes: c.ingress.Swap(0),
			Requests:     c.requests.Swap(0),
		}}
		if st := c.storage.Load(); st > 0 && elapsed > 0 {
			c.storageAcc += float64(st) * elapsed.Seconds()
		}
		if d.IsZero() {
			continue
		}
		m.m.observe(c.org, list.kind(c), d.Values)
		deltas = append(deltas, d)
	}
	if final || writeStorage && now.Sub(m.lastStorage) >= storageEvery(list.n) {
		deltas = m.storageDeltas(list, deltas)
		m.lastStorage = now
	}
	return m.appendBatch(out, now, deltas)
}

// storageDeltas adds to deltas the whole byte-seconds each counter accrued
// (the fraction stays for the next time).
func (*Meter) storageDeltas(list counterList, deltas []Delta) []Delta {
	at := make(map[[2]string]int, len(deltas))
	for i, d := range deltas {
		at[[2]string{d.Org, d.Site}] = i
	}
	for _, c := range list.all() {
		n := int64(c.storageAcc)
		if n <= 0 {
			continue
		}
		c.storageAcc -= float64(n)
		if i, ok := at[[2]string{c.org, c.site}]; ok {
			deltas[i].StorageByteSeconds = n
			continue
		}
		deltas = append(deltas, Delta{Org: c.org, Site: c.site, Values: Values{StorageByteSeconds: n}})
	}
	return deltas
}

// maxBatchDeltas bounds the deltas of one batch. The sink applies a batch
// in one transaction (bbolt) or one round of scripts (Redis), which holds
// the bbolt file's only writer for its length: the storage of a million
// sites, written as one batch, would keep registry writes waiting for
// seconds. Split into batches of at most this many deltas, each applied on
// its own, a write waits for one of them at most.
const maxBatchDeltas = 512

// appendBatch appends the deltas as batches of time at (maxBatchDeltas at
// most each, in (org, site) order), unless there are none.
func (m *Meter) appendBatch(out []*Batch, at time.Time, deltas []Delta) []*Batch {
	slices.SortFunc(deltas, func(a, b Delta) int {
		return cmp.Or(strings.Compare(a.Org, b.Org), strings.Compare(a.Site, b.Site))
	})
	for chunk := range slices.Chunk(deltas, maxBatchDeltas) {
		m.seq++
		out = append(out, &Batch{Node: m.node, Seq: m.seq, Time: at.UTC(), Deltas: chunk})
	}
	return out
}
