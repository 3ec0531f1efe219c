//go:build !race

package access

import "testing"

// TestExcludedHasAllocs: the request path asks every request of an org
// with exclusions; Has must not allocate.
func TestExcludedHasAllocs(t *testing.T) {
	ex := &Excluded{Sites: map[string]struct{}{"s2": {}}, Domains: map[string]struct{}{"www.a.example": {}}}
	domain := []byte("a.example")
	if n := testing.AllocsPerRun(100, func() { ex.Has("s1", domain) }); n != 0 {
		t.Fatalf("Has allocates %v per call", n)
	}
}
