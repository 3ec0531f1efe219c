package outbox

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		n       int
		nominal time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {10, time.Minute}, {100, time.Minute}}
	for _, tc := range tests {
		for range 50 {
			if d := Backoff(tc.n, time.Second, time.Minute); d < tc.nominal*8/10 || d > tc.nominal*12/10 {
				t.Fatalf("Backoff(%d) = %s, want %s ±20 %%", tc.n, d, tc.nominal)
			}
		}
	}
}
