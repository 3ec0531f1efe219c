package giteatest

import "testing"

// TestAccessToken: the token is found whether Gitea's root warning comes
// before or after it (seen: after, which failed the harness).
func TestAccessToken(t *testing.T) {
	const tok = "7b79411262d95de95c3d404cbbe2e44859384764"
	const warn = "2026/11/26 11:39:49 modules/setting/setting.go:190:loadRunModeFrom() [E] You are running Gitea using the root user"
	for _, out := range []string{tok + "\n", warn + "\n" + tok + "\n", tok + "\n" + warn + "\n"} {
		if got := accessToken(out); got != tok {
			t.Errorf("accessToken(%q) = %q", out, got)
		}
	}
	if got := accessToken(warn + "\n"); got != "" {
		t.Errorf("no token: %q", got)
	}
}
