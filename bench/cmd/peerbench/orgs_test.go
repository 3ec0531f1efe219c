package main

import (
	"bufio"
	"strings"
	"testing"
)

func TestDecisionsProblem(t *testing.T) {
	const head = "# HELP tollgate_billing_orgs Orgs by current enforcement decision.\n# TYPE tollgate_billing_orgs gauge\n"
	for _, tc := range []struct {
		name, metrics string
		wantErr       string // "" for none
	}{
		{"all allowed", head + `tollgate_billing_orgs{decision="allow"} 3
tollgate_billing_orgs{decision="throttle"} 0
tollgate_billing_orgs{decision="block_quota"} 0
tollgate_billing_orgs_other{decision="throttle"} 9
`, ""},
		{"throttled", head + `tollgate_billing_orgs{decision="allow"} 1
tollgate_billing_orgs{decision="throttle"} 1
`, "throttle=1"},
		{"blocked", head + `tollgate_billing_orgs{decision="allow"} 0
tollgate_billing_orgs{decision="block_suspended"} 2
`, "block_suspended=2"},
		{"metric missing", "go_goroutines 7\n", "no tollgate_billing_orgs samples"},
		{"unreadable", `tollgate_billing_orgs{decision="allow"} x` + "\n", "unreadable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counts, err := parseDecisions(bufio.NewScanner(strings.NewReader(tc.metrics)))
			if err == nil {
				err = decisionsProblem(counts)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
