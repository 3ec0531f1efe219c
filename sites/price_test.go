package sites

import "testing"

func TestPriceValidate(t *testing.T) {
	for _, tc := range []struct {
		p  Price
		ok bool
	}{
		{Price{1900, "eur", "month"}, true},
		{Price{0, "usd", "year"}, true},
		{Price{-1, "eur", "month"}, false},
		{Price{1900, "EUR", "month"}, false},
		{Price{1900, "euro", "month"}, false},
		{Price{1900, "", "month"}, false},
		{Price{1900, "eur", "week"}, false},
	} {
		if err := tc.p.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v, want ok=%v", tc.p, err, tc.ok)
		}
		plan := Plan{Name: "p", Price: &tc.p}
		if err := plan.Validate(); (err == nil) != tc.ok {
			t.Errorf("plan with %+v: %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}
