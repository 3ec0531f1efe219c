package billing

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// TestGraceEnded: every way out of past_due ends the grace period with one
// grace.ended whose outcome is the new state: paid (active), expired when
// the grace runs out, suspended by the operator. Entering past_due and
// moves between other states send none.
func TestGraceEnded(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(f *fixture)
		want string // data.outcome
	}{
		{"paid", func(f *fixture) {
			f.apply(Change{State: sites.StateActive, Actor: ActorStripe, Cause: "invoice paid", StripeEventAt: f.now})
		}, sites.StateActive},
		{"expired", func(f *fixture) {
			f.now = f.now.Add(72 * time.Hour)
			f.b.Evaluate(context.Background())
		}, sites.StateExpired},
		{"suspended", func(f *fixture) {
			f.apply(Change{State: sites.StateSuspended, Actor: ActorOperator, Cause: "abuse"})
		}, sites.StateSuspended},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.apply(Change{State: sites.StatePastDue, Actor: ActorStripe, Cause: "payment failed", StripeEventAt: f.now})
			if n := f.hooks.count("grace.ended"); n != 0 {
				t.Fatalf("grace.ended on entering past_due: %d", n)
			}
			tc.end(f)
			var ended []HookEvent
			for _, e := range f.hooks.events {
				if e.Type == "grace.ended" {
					ended = append(ended, e)
				}
			}
			if len(ended) != 1 {
				t.Fatalf("grace.ended sent %d times: %+v", len(ended), f.hooks.events)
			}
			e := ended[0]
			if e.Org != "acme" || e.Data["outcome"] != tc.want || e.Data["from"] != sites.StatePastDue || e.ID == "" {
				t.Fatalf("grace.ended %+v, want outcome %s", e, tc.want)
			}
			// Later moves send no other.
			if tc.want != sites.StateActive {
				f.apply(Change{State: sites.StateActive, Actor: ActorOperator, Cause: "test"})
			}
			f.apply(Change{State: sites.StateSuspended, Actor: ActorOperator, Cause: "test"})
			if n := f.hooks.count("grace.ended"); n != 1 {
				t.Fatalf("grace.ended sent %d times after other moves", n)
			}
		})
	}
}
