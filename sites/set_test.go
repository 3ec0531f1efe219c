package sites

import (
	"fmt"
	"slices"
	"testing"
)

// TestSetGrowsAndShrinks: a set keeps its members through the three forms
// it takes (one, few, many), adding and removing in any order.
func TestSetGrowsAndShrinks(t *testing.T) {
	var s set
	var want []string
	check := func(step string) {
		t.Helper()
		if got := s.sorted(); s.Len() != len(want) || !slices.Equal(got, want) {
			t.Fatalf("%s: Len %d, members %v; want %v", step, s.Len(), got, want)
		}
		n := 0
		for range s.All() {
			n++
		}
		if n != len(want) {
			t.Fatalf("%s: All yields %d members, want %d", step, n, len(want))
		}
	}
	check("empty")
	for i := range 3 * setFew {
		k := fmt.Sprintf("m%03d", (i*7)%(3*setFew))
		s, _ = s.with(k)
		s, _ = s.with(k) // again: nothing
		want = append(want, k)
		slices.Sort(want)
		check("add " + k)
	}
	for i := range 3 * setFew {
		k := fmt.Sprintf("m%03d", (i*11)%(3*setFew))
		s, _ = s.without(k)
		s, _ = s.without(k) // again: nothing
		want = slices.DeleteFunc(want, func(m string) bool { return m == k })
		check("remove " + k)
	}
}

// TestByKeyLastWins: records read out of their keys' order (one stored
// under another key than its own) are sorted by their own keys, the last
// read winning.
func TestByKeyLastWins(t *testing.T) {
	a1, b, a2 := &Site{ID: "a", Org: "first"}, &Site{ID: "b"}, &Site{ID: "a", Org: "last"}
	if got := byKey([]*Site{a1, b, a2}, siteID); !slices.Equal(got, []*Site{a2, b}) {
		t.Fatalf("byKey = %v, want [a (last) b]", got)
	}
}
