//go:build unix

package proxy

import (
	"math"
	"syscall"
)

// descriptorLimit is the process's soft RLIMIT_NOFILE (the Go runtime raises
// it to the hard limit at start); MaxInt32 when unlimited or unknown.
func descriptorLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(r.Cur)
}
