//go:build !unix

package proxy

import "math"

// descriptorLimit is MaxInt32 where there is no RLIMIT_NOFILE: a listener
// keeps to limits.concurrency alone.
func descriptorLimit() int { return math.MaxInt32 }
