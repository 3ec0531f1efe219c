package main

import (
	"math"
	"slices"
)

// median of xs (the mean of the middle two for an even count); NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// pairedRatios divides a[i] by b[i] round by round. A round where either side
// is missing (NaN) or b is zero gives no ratio.
func pairedRatios(a, b []float64) []float64 {
	out := make([]float64, 0, min(len(a), len(b)))
	for i := range min(len(a), len(b)) {
		if math.IsNaN(a[i]) || math.IsNaN(b[i]) || b[i] == 0 {
			continue
		}
		out = append(out, a[i]/b[i])
	}
	return out
}

// medianRatio is tollgate's standing against a peer: the median of the
// per-round ratios, which cancels drift that hits both sides of a round.
func medianRatio(a, b []float64) float64 { return median(pairedRatios(a, b)) }
