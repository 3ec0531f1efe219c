package sites

import (
	"slices"

	"github.com/tollgate-edge/tollgate/internal/cowmap"
)

// set is an immutable set of record keys (an org's sites, a site's
// domains), shared between snapshots like the records. Most sets have one
// member, held in the set itself (no allocation); larger ones are a sorted
// slice, and past setFew members a cowmap, so adding to an org of a million
// sites still copies one shard.
type set struct {
	one  string   // the member of a set of one; "" otherwise
	more *members // two members or more; nil otherwise
}

// members are the members of a set of two or more: few, or else many.
type members struct {
	few  []string // sorted; nil when many holds the members
	many cowmap.Map[struct{}]
}

const setFew = 16

// setOfSorted is the set of the sorted, distinct keys; it keeps keys.
func setOfSorted(keys []string) set {
	switch {
	case len(keys) == 0:
		return set{}
	case len(keys) == 1:
		return set{one: keys[0]}
	case len(keys) <= setFew:
		return set{more: &members{few: slices.Clip(keys)}}
	}
	return set{more: &members{many: cowmap.Build(len(keys), func(yield func(string, struct{}) bool) {
		for _, k := range keys {
			if !yield(k, struct{}{}) {
				return
			}
		}
	})}}
}

// Len is the number of members.
func (s set) Len() int {
	switch {
	case s.more == nil && s.one == "":
		return 0
	case s.more == nil:
		return 1
	case s.more.few != nil:
		return len(s.more.few)
	}
	return s.more.many.Len()
}

// fewOf is the members of a set held as a slice (of one, few or none);
// ok is false when a cowmap holds them.
func (s set) fewOf() (few []string, ok bool) {
	switch {
	case s.more == nil && s.one == "":
		return nil, true
	case s.more == nil:
		return []string{s.one}, true
	case s.more.few != nil:
		return s.more.few, true
	}
	return nil, false
}

// with returns the set with k added, and the entries it copied.
func (s set) with(k string) (set, int) {
	few, ok := s.fewOf()
	if !ok {
		e := s.more.many.Edit()
		e.Set(k, struct{}{})
		return set{more: &members{many: e.Map()}}, e.Copied
	}
	i, found := slices.BinarySearch(few, k)
	if found {
		return s, 0
	}
	return setOfSorted(slices.Insert(slices.Clone(few), i, k)), len(few)
}

// without returns the set with k removed, and the entries it copied.
func (s set) without(k string) (set, int) {
	few, ok := s.fewOf()
	if !ok {
		if _, ok := s.more.many.Lookup(k); !ok {
			return s, 0
		}
		e := s.more.many.Edit()
		e.Delete(k)
		return set{more: &members{many: e.Map()}}, e.Copied
	}
	i, found := slices.BinarySearch(few, k)
	if !found {
		return s, 0
	}
	return setOfSorted(slices.Delete(slices.Clone(few), i, i+1)), len(few)
}

// All yields the members, in no particular order.
func (s set) All() func(yield func(string) bool) {
	return func(yield func(string) bool) {
		if s.more == nil {
			if s.one != "" {
				yield(s.one)
			}
			return
		}
		for _, k := range s.more.few {
			if !yield(k) {
				return
			}
		}
		for k := range s.more.many.All() {
			if !yield(k) {
				return
			}
		}
	}
}

// sorted returns the members, sorted, in a new slice.
func (s set) sorted() []string {
	if few, ok := s.fewOf(); ok {
		return slices.Clone(few)
	}
	keys := make([]string, 0, s.Len())
	for k := range s.more.many.All() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
