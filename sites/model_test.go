package sites

import (
	"strings"
	"testing"
)

func TestValidBranch(t *testing.T) {
	for b, want := range map[string]bool{
		"pages": true, "feature/x": true, "v1.2": true, "": false, "-x": false, "a..b": false, "a b": false,
		"a:b": false, "x.lock": false, "/x": false, "x/": false, "a//b": false, "@{x": false, "a\x00": false,
		strings.Repeat("a", 256): false, "ä": true,
	} {
		if got := validBranch(b); got != want {
			t.Errorf("validBranch(%q) = %v; want %v", b, got, want)
		}
	}
}
