package cowmap

import (
	"fmt"
	"maps"
	"testing"
)

func TestVersionsAreIndependent(t *testing.T) {
	var empty Map[int]
	if empty.Len() != 0 || empty.Get("a") != 0 || empty.GetBytes([]byte("a")) != 0 {
		t.Fatal("zero Map is not empty")
	}
	e := empty.Edit()
	for i := range 5000 {
		e.Set(fmt.Sprint(i), i)
	}
	v1 := e.Map()

	e = v1.Edit()
	e.Set("0", -1)      // replace
	e.Set("new", 42)    // add
	e.Delete("1")       // remove
	e.Delete("missing") // absent: nothing
	if got := e.Get("0"); got != -1 {
		t.Errorf("editor sees its own write: Get(0) = %d", got)
	}
	v2 := e.Map()

	for _, c := range []struct {
		m    Map[int]
		key  string
		want int
		ok   bool
	}{
		{v1, "0", 0, true}, {v1, "1", 1, true}, {v1, "new", 0, false}, {v1, "4999", 4999, true},
		{v2, "0", -1, true}, {v2, "1", 0, false}, {v2, "new", 42, true}, {v2, "4999", 4999, true},
	} {
		got, ok := c.m.Lookup(c.key)
		if got != c.want || ok != c.ok {
			t.Errorf("Lookup(%q) = %d, %v; want %d, %v", c.key, got, ok, c.want, c.ok)
		}
		if b := c.m.GetBytes([]byte(c.key)); b != c.want {
			t.Errorf("GetBytes(%q) = %d, want %d", c.key, b, c.want)
		}
	}
	if v1.Len() != 5000 || v2.Len() != 5000 {
		t.Errorf("Len = %d, %d; want 5000, 5000", v1.Len(), v2.Len())
	}
	all := maps.Collect(v2.All())
	if len(all) != 5000 || all["new"] != 42 || all["0"] != -1 {
		t.Errorf("All: %d entries, new=%d, 0=%d", len(all), all["new"], all["0"])
	}

	e = v2.Edit()
	for k := range v2.All() {
		e.Delete(k)
	}
	if v3 := e.Map(); v3.Len() != 0 || v3.Get("new") != 0 || v2.Get("new") != 42 {
		t.Errorf("emptied: Len %d, v2 changed: %v", v3.Len(), v2.Get("new") != 42)
	}
}

// TestWriteCopiesOneShard: the cost of a write does not grow with the map;
// it copies the entries of one shard, at most about perShard.
func TestWriteCopiesOneShard(t *testing.T) {
	for _, n := range []int{1000, 100_000} {
		e := Map[int]{}.Edit()
		for i := range n {
			e.Set(fmt.Sprint(i), i)
		}
		m := e.Map()
		e = m.Edit()
		e.Set("x", 1)
		e.Set("x", 2) // the same shard again: no second copy
		if limit := 4 * perShard; e.Copied > limit {
			t.Errorf("n=%d: one write copied %d entries, want at most %d", n, e.Copied, limit)
		}
	}
}

func TestGetBytesAllocs(t *testing.T) {
	m := From(map[string]int{"example.com": 1})
	key := []byte("example.com")
	if a := testing.AllocsPerRun(100, func() { _ = m.GetBytes(key) }); a != 0 {
		t.Errorf("GetBytes allocates %.0f times", a)
	}
}

func BenchmarkSetIn1M(b *testing.B) {
	e := Map[int]{}.Edit()
	for i := range 1_000_000 {
		e.Set(fmt.Sprint(i), i)
	}
	m := e.Map()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e := m.Edit()
		e.Set(fmt.Sprint(i), i)
		m = e.Map()
	}
}

// TestBuild: a Map built at once holds what one built by Set does, shard
// for shard, and takes edits like any other.
func TestBuild(t *testing.T) {
	for _, n := range []int{0, 1, 31, 33, 5000} {
		src := map[string]int{}
		for i := range n {
			src[fmt.Sprint("k", i)] = i
		}
		m := From(src)
		if m.Len() != n || !maps.Equal(maps.Collect(m.All()), src) {
			t.Fatalf("n=%d: Build holds %d entries, want the %d given", n, m.Len(), n)
		}
		for k, v := range src {
			if m.Get(k) != v || m.GetBytes([]byte(k)) != v {
				t.Fatalf("n=%d: Get(%q) = %d, GetBytes = %d; want %d", n, k, m.Get(k), m.GetBytes([]byte(k)), v)
			}
		}
		e := m.Edit()
		e.Set("new", -1)
		e.Delete("k0")
		if next := e.Map(); next.Get("new") != -1 || next.Get("k0") != 0 || (n > 0 && m.Get("k0") != 0) || m.Get("new") != 0 {
			t.Fatalf("n=%d: an edit of a built map did not apply, or changed it", n)
		}
	}
}
