package proctest

import (
	"fmt"
	"os/exec"
	"sync"
)

// Restartable is a child process that fault tests stop and start again,
// on the same ports and with the same data. Its zero value is stopped. It is
// safe for concurrent use.
type Restartable struct {
	mu   sync.Mutex
	proc *Proc // nil while stopped
}

// Start starts cmd (see Start) and calls ready with the process's Done
// channel. If ready fails, the process is killed (see Proc.Kill) and the
// error is ready's followed by the process's output. Call Stop first if it
// may be running.
func (r *Restartable) Start(cmd *exec.Cmd, ready func(exited <-chan struct{}) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := Start(cmd)
	if err != nil {
		return err
	}
	if err := ready(p.Done); err != nil {
		p.Kill()
		return fmt.Errorf("%w\n%s", err, p.Out.String())
	}
	r.proc = p
	return nil
}

// Stop kills the process (see Proc.Kill) and waits for it to exit. It is
// safe while stopped and more than once.
func (r *Restartable) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return
	}
	r.proc.Kill()
	r.proc = nil
}
