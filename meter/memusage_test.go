package meter

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// memUsage is a usage store in memory (Sink, Spool and Reader) with the
// contract of the store package's: a batch is applied for an org only when
// its Seq is above the last one applied for (Node, Org); hours and periods
// are UTC. The meter's tests run on it (the store package imports meter).
type memUsage struct {
	mu      sync.Mutex
	applied map[[2]string]uint64         // (node, org) -> last applied Seq
	hours   map[string]map[int64]Values  // org -> hour (Unix s) -> usage
	periods map[string]map[string]Values // period -> org -> usage
	spool   map[uint64]*Batch            // Seq -> batch
}

var (
	_ Sink   = (*memUsage)(nil)
	_ Spool  = (*memUsage)(nil)
	_ Reader = (*memUsage)(nil)
)

func newMemUsage() *memUsage {
	return &memUsage{applied: map[[2]string]uint64{}, hours: map[string]map[int64]Values{},
		periods: map[string]map[string]Values{}, spool: map[uint64]*Batch{}}
}

func (s *memUsage) Apply(_ context.Context, b *Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	hour, period := Hour(b.Time).Unix(), Period(b.Time)
	skip := map[string]bool{}
	for _, d := range b.Deltas {
		done, seen := skip[d.Org]
		if !seen {
			last, ok := s.applied[[2]string{b.Node, d.Org}]
			done = ok && last >= b.Seq
			skip[d.Org] = done
			if !done {
				s.applied[[2]string{b.Node, d.Org}] = b.Seq
			}
		}
		if done {
			continue
		}
		if s.hours[d.Org] == nil {
			s.hours[d.Org] = map[int64]Values{}
		}
		if s.periods[period] == nil {
			s.periods[period] = map[string]Values{}
		}
		h, p := s.hours[d.Org][hour], s.periods[period][d.Org]
		h.Add(d.Values)
		p.Add(d.Values)
		s.hours[d.Org][hour], s.periods[period][d.Org] = h, p
	}
	return nil
}

func (s *memUsage) Save(_ context.Context, bs []*Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range bs {
		c := *b
		c.Deltas = slices.Clone(b.Deltas)
		s.spool[b.Seq] = &c
	}
	return nil
}

func (s *memUsage) Load(context.Context) ([]*Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Batch
	for _, seq := range slices.Sorted(maps.Keys(s.spool)) {
		c := *s.spool[seq]
		c.Deltas = slices.Clone(c.Deltas)
		out = append(out, &c)
	}
	return out, nil
}

func (s *memUsage) Remove(_ context.Context, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.spool, seq)
	return nil
}

func (s *memUsage) Hourly(_ context.Context, org string, from, to time.Time) ([]Point, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := Hour(to)
	if end.Before(to) {
		end = end.Add(time.Hour)
	}
	var out []Point
	for _, h := range slices.Sorted(maps.Keys(s.hours[org])) {
		if h >= Hour(from).Unix() && h < end.Unix() {
			out = append(out, Point{Start: time.Unix(h, 0).UTC(), Values: s.hours[org][h]})
		}
	}
	return out, nil
}

func (s *memUsage) PeriodTotals(_ context.Context, period, after string, limit int) ([]OrgTotal, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []OrgTotal
	for _, org := range slices.Sorted(maps.Keys(s.periods[period])) {
		if org <= after {
			continue
		}
		if len(out) == limit {
			return out, out[len(out)-1].Org, nil
		}
		out = append(out, OrgTotal{Org: org, Values: s.periods[period][org]})
	}
	return out, "", nil
}
