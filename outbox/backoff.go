package outbox

import (
	"math/rand/v2"
	"time"
)

// Backoff is the wait after the n-th failed attempt (n ≥ 1): base·2ⁿ⁻¹
// capped at limit, then ±20 % jitter so that retries do not fall in step.
func Backoff(n int, base, limit time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
