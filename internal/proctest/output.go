// Package proctest holds what tests that run child processes (tollgate,
// redis-server, stripe-mock, gitea) share: free ports, a place for their
// output, waiting until they are ready, and stopping and starting them
// again for fault tests.
package proctest

import (
	"bytes"
	"sync"
)

// Output collects a child process's stdout or stderr. exec copies into it
// from its own goroutine, so it may be read while the process runs.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
