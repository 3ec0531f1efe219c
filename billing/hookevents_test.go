package billing

import (
	"strings"
	"testing"
)

const hookSecret = "0123456789abcdef-test-secret"

func TestHookConfigValidate(t *testing.T) {
	good := HookConfig{URL: "https://ops.example/tollgate", Secret: hookSecret, Events: []string{"quota.warning", "org.restored"}}
	for _, tc := range []struct {
		name string
		mod  func(c *HookConfig)
		keys []string // keys the error names; none: valid
	}{
		{"valid", func(*HookConfig) {}, nil},
		{"all events", func(c *HookConfig) { c.Events = nil }, nil},
		{"every type", func(c *HookConfig) { c.Events = HookTypes }, nil},
		{"empty url", func(c *HookConfig) { c.URL = "" }, []string{"billing.hooks[3].url"}},
		{"ftp url", func(c *HookConfig) { c.URL = "ftp://ops.example/x" }, []string{"billing.hooks[3].url"}},
		{"no host", func(c *HookConfig) { c.URL = "http:///x" }, []string{"billing.hooks[3].url"}},
		{"not a url", func(c *HookConfig) { c.URL = "://ops" }, []string{"billing.hooks[3].url"}},
		{"relative", func(c *HookConfig) { c.URL = "ops.example/hooks" }, []string{"billing.hooks[3].url"}},
		{"no secret", func(c *HookConfig) { c.Secret = "" }, []string{"billing.hooks[3].secret"}},
		{"short secret", func(c *HookConfig) { c.Secret = "fifteen-chars!!" }, []string{"billing.hooks[3].secret"}},
		{"unknown event", func(c *HookConfig) { c.Events = []string{"quota.warning", "quota.warn"} }, []string{"billing.hooks[3].events", `"quota.warn"`}},
		{"all wrong", func(c *HookConfig) { c.URL, c.Secret, c.Events = "x", "short", []string{"nope"} },
			[]string{"billing.hooks[3].url", "billing.hooks[3].secret", "billing.hooks[3].events"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate(3)
			if len(tc.keys) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, k := range tc.keys {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("error %q does not name %s", err, k)
				}
			}
			if c.Secret != "" && strings.Contains(err.Error(), c.Secret) {
				t.Errorf("error %q shows the secret", err)
			}
		})
	}
}
