package billing

import (
	"context"
	"fmt"
	"testing"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestGatesOnlyForOrgs: gates are held for orgs in the registry only. Ids
// that are no org (a stranger's invented pages owner) share one gate that
// allows and is never decided, so a million of them cost nothing; an org's
// gate is its own, stable, and decided from its state.
func TestGatesOnlyForOrgs(t *testing.T) {
	f := newFixture(t) // org "acme" on plan "small"
	ctx := context.Background()
	held := func() int {
		n := 0
		f.b.gates.Range(func(any, any) bool { n++; return true })
		return n
	}
	before := held()
	shared := f.b.Gate("gitea-nobody")
	for i := range 10_000 {
		if g := f.b.Gate(fmt.Sprintf("gitea-invented%d", i)); g != shared {
			t.Fatalf("id %d that is no org got its own gate", i)
		}
	}
	if n := held() - before; n != 0 {
		t.Fatalf("%d gates held for ids that are no org; want 0", n)
	}
	if shared.Decision() != access.Allow {
		t.Fatalf("the shared gate: %v; want allow", shared.Decision())
	}

	tests := []struct {
		org   string
		state string
		want  access.Decision
	}{
		{"acme", sites.StateActive, access.Allow},
		{"acme", sites.StateSuspended, access.BlockSuspended},
	}
	acme := f.b.Gate("acme")
	if acme == shared {
		t.Fatal("an org in the registry got the shared gate")
	}
	for _, tt := range tests {
		t.Run(tt.org+"/"+tt.state, func(t *testing.T) {
			state := tt.state
			if _, err := f.reg.UpdateOrg(ctx, tt.org, sites.OrgPatch{State: &state}); err != nil {
				t.Fatal(err)
			}
			g := f.b.Gate(tt.org)
			if g != acme {
				t.Fatal("an org's gate changed pointer")
			}
			if g.Decision() != tt.want {
				t.Fatalf("%s %s: %v; want %v", tt.org, tt.state, g.Decision(), tt.want)
			}
			if shared.Decision() != access.Allow {
				t.Fatalf("the shared gate: %v; want allow", shared.Decision())
			}
		})
	}

	// An org created later gets its own gate once it exists.
	if _, err := f.reg.CreateOrg(ctx, sites.Org{ID: "gitea-nobody", Plan: "small"}); err != nil {
		t.Fatal(err)
	}
	if g := f.b.Gate("gitea-nobody"); g == shared {
		t.Fatal("an org created after its id was asked still gets the shared gate")
	}
}
