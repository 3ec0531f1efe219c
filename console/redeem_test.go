package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/console"
	"github.com/tollgate-edge/tollgate/credit"
)

// TestCreditRedeem: the credit page's code form, for a token with the
// billing scope only, through real billing and its codes on bbolt: a code
// redeemed goes into the balance once and is named after the redirect;
// refusals show the page again with the reason and the code as typed
// (escaped); a tenant's tries are limited.
func TestCreditRedeem(t *testing.T) {
	var bill *billing.Billing
	f := newFixtureWith(t, func(o *console.Options, b *billing.Billing) { o.Codes, bill = b, b })
	if _, err := bill.CreateCode(context.Background(), credit.Code{Code: "WELCOME-10", Amount: 1000}); err != nil {
		t.Fatal(err)
	}
	reader := f.browser(t)
	reader.signIn(tokRead)
	if _, body := reader.get("/console/credit"); strings.Contains(body, `action="/console/credit/redeem"`) || !strings.Contains(body, "Redeeming a code needs a token with the <code>billing</code> scope") {
		t.Errorf("a read-only token sees the form, or no note:\n%s", body)
	}
	if resp, _ := reader.do(http.MethodPost, "/console/credit/redeem", url.Values{"csrf": {reader.csrf()}, "code": {"WELCOME-10"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a read-only token redeemed: %d", resp.StatusCode)
	}

	b := f.browser(t)
	csrf := b.signIn(tokAdmin)
	if resp, _ := b.do(http.MethodPost, "/console/credit/redeem", url.Values{"code": {"WELCOME-10"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("without the CSRF token: %d", resp.StatusCode)
	}
	resp, body := b.do(http.MethodPost, "/console/credit/redeem", url.Values{"csrf": {csrf}, "code": {" welcome-10 "}}, nil)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/console/credit?redeemed=WELCOME-10" {
		t.Fatalf("redeem: %d %q\n%s", resp.StatusCode, loc, body)
	}
	_, body = b.get("/console/credit?redeemed=WELCOME-10")
	for _, want := range []string{`id="redeemed">Code <strong>WELCOME-10</strong> redeemed`, "Balance: <strong>47.66 EUR</strong>",
		"<td>grant</td><td>10.00 EUR</td><td>47.66 EUR</td><td>credit code WELCOME-10</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("after the redemption the page lacks %q:\n%s", want, body)
		}
	}

	for _, tc := range []struct {
		typed, shown string
		status       int
		msg          string
	}{
		{"WELCOME-10", "WELCOME-10", http.StatusConflict, "redeemed this code already"},
		{"NOPE-NOPE", "NOPE-NOPE", http.StatusUnprocessableEntity, "This code is not valid"},
		{`"><script>x</script>`, "&#34;&gt;&lt;script&gt;x&lt;/script&gt;", http.StatusUnprocessableEntity, "This code is not valid"},
	} {
		resp, body := b.do(http.MethodPost, "/console/credit/redeem", url.Values{"csrf": {csrf}, "code": {tc.typed}}, nil)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.msg) || !strings.Contains(body, `maxlength="64" value="`+tc.shown+`"`) {
			t.Errorf("code %q: %d, want %d with %q and the code shown again\n%s", tc.typed, resp.StatusCode, tc.status, tc.msg, body)
		}
	}
	// Four tries so far; the limit allows billing.CodeTriesBurst at once.
	for i := 4; i < billing.CodeTriesBurst; i++ {
		b.do(http.MethodPost, "/console/credit/redeem", url.Values{"csrf": {csrf}, "code": {fmt.Sprintf("GUESS-%04d", i)}}, nil)
	}
	resp, body = b.do(http.MethodPost, "/console/credit/redeem", url.Values{"csrf": {csrf}, "code": {"GUESS-LAST"}}, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "10" || !strings.Contains(body, "Too many codes tried") {
		t.Errorf("try %d: %d, Retry-After %q\n%s", billing.CodeTriesBurst+1, resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if bal, _, _ := bill.CreditHistory(context.Background(), "acme"); bal != 4766 {
		t.Errorf("balance %d after one redemption and refusals, want 4766", bal)
	}
}
