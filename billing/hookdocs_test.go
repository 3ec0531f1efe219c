package billing

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestHooksDocumented: docs/hooks.md has a section per hook type, no other,
// each with a sample payload that is a HookEvent of that type.
func TestHooksDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/hooks.md")
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile("^`([a-z_.]+)`\n")
	sample := regexp.MustCompile("(?s)```json\n(.*?)\n```")
	var documented []string
	for _, part := range strings.Split(string(b), "\n### ")[1:] {
		part, _, _ = strings.Cut(part, "\n## ")
		m := heading.FindStringSubmatch(part)
		if m == nil {
			t.Errorf("docs/hooks.md: a ### heading is not a `type`: %.40q", part)
			continue
		}
		typ := m[1]
		documented = append(documented, typ)
		s := sample.FindStringSubmatch(part)
		if s == nil {
			t.Errorf("docs/hooks.md: %s has no sample payload", typ)
			continue
		}
		dec := json.NewDecoder(strings.NewReader(s[1]))
		dec.DisallowUnknownFields()
		var e HookEvent
		if err := dec.Decode(&e); err != nil {
			t.Errorf("docs/hooks.md: the sample of %s: %v", typ, err)
			continue
		}
		if e.Type != typ || e.ID == "" || e.Org == "" || e.At.IsZero() || len(e.Data) == 0 {
			t.Errorf("docs/hooks.md: the sample of %s is not a complete %s event: %+v", typ, typ, e)
		}
	}
	for _, typ := range HookTypes {
		if !slices.Contains(documented, typ) {
			t.Errorf("hook type %s is not documented in docs/hooks.md", typ)
		}
	}
	for _, typ := range documented {
		if !KnownHookType(typ) {
			t.Errorf("docs/hooks.md documents %s, which is not a hook type", typ)
		}
	}
	if len(documented) != len(HookTypes) {
		t.Errorf("docs/hooks.md documents %d types (%v), billing.HookTypes has %d", len(documented), documented, len(HookTypes))
	}
}
