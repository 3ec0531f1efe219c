package stripetest

import (
	"net/http"
	"strings"
	"testing"
)

func TestStartStopRestart(t *testing.T) {
	m := Start(t)
	get := func() error {
		req, _ := http.NewRequest(http.MethodPost, m.URL()+"/v1/billing/meter_events",
			strings.NewReader("event_name=e&payload[stripe_customer_id]=cus_1&payload[value]=1"))
		req.SetBasicAuth("sk_test_123", "")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("meter event: %d", resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if err := get(); err == nil {
		t.Fatal("stripe-mock answers after Stop")
	}
	m.Stop() // twice is fine
	m.Restart()
	if err := get(); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
}

func TestBinaryFromEnv(t *testing.T) {
	t.Setenv(EnvBinary, "/nonexistent/stripe-mock")
	if _, err := Binary(); err == nil || !strings.Contains(err.Error(), EnvBinary) {
		t.Fatalf("a bad %s: %v", EnvBinary, err)
	}
	t.Setenv(EnvBinary, "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("PATH", t.TempDir())
	if _, err := Binary(); err == nil || !strings.Contains(err.Error(), "make stripe-mock") {
		t.Fatalf("no binary anywhere: %v", err)
	}
}
