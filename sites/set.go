package sites

import (
	"slices"

	"github.com/tollgate-edge/tollgate/internal/cowmap"
)

// set is an immutable set of record keys (an org's sites, a site's
// domains), shared between snapshots like the records. Most sets are small
// and kept as a sorted slice; past setFew members they move to a cowmap, so
// adding to an org of a million sites still copies one shard.
type set struct {
	few  []string              // sorted; nil when many holds the members
	many *cowmap.Map[struct{}] // nil while few holds them
}

const setFew = 16

func setOf(members map[string]struct{}) set {
	if len(members) <= setFew {
		few := make([]string, 0, len(members))
		for k := range members {
			few = append(few, k)
		}
		slices.Sort(few)
		return set{few: few}
	}
	m := cowmap.From(members)
	return set{many: &m}
}

// Len is the number of members.
func (s set) Len() int {
	if s.many != nil {
		return s.many.Len()
	}
	return len(s.few)
}

// with returns the set with k added, and the entries it copied.
func (s set) with(k string) (set, int) {
	if s.many != nil {
		e := s.many.Edit()
		e.Set(k, struct{}{})
		m := e.Map()
		return set{many: &m}, e.Copied
	}
	i, found := slices.BinarySearch(s.few, k)
	if found {
		return s, 0
	}
	if len(s.few) < setFew {
		return set{few: slices.Insert(slices.Clip(s.few), i, k)}, len(s.few)
	}
	e := cowmap.Map[struct{}]{}.Edit()
	for _, m := range s.few {
		e.Set(m, struct{}{})
	}
	e.Set(k, struct{}{})
	m := e.Map()
	return set{many: &m}, len(s.few)
}

// without returns the set with k removed, and the entries it copied.
func (s set) without(k string) (set, int) {
	if s.many != nil {
		if _, ok := s.many.Lookup(k); !ok {
			return s, 0
		}
		e := s.many.Edit()
		e.Delete(k)
		m := e.Map()
		return set{many: &m}, e.Copied
	}
	i, found := slices.BinarySearch(s.few, k)
	if !found {
		return s, 0
	}
	return set{few: slices.Delete(slices.Clone(s.few), i, i+1)}, len(s.few)
}

// All yields the members, in no particular order.
func (s set) All() func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for _, k := range s.few {
			if !yield(k) {
				return
			}
		}
		if s.many == nil {
			return
		}
		for k := range s.many.All() {
			if !yield(k) {
				return
			}
		}
	}
}

// sorted returns the members, sorted, in a new slice.
func (s set) sorted() []string {
	if s.many == nil {
		return slices.Clone(s.few)
	}
	keys := make([]string, 0, s.many.Len())
	for k := range s.many.All() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
