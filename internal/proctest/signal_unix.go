//go:build unix

package proctest

import (
	"errors"
	"syscall"
)

// errNotRunning is returned by Signal while the process is stopped.
var errNotRunning = errors.New("proctest: process not running")

// Signal sends sig to the process, or to its process group when it leads
// one of its own (as kill does). Fault tests freeze a server with SIGSTOP,
// so that it holds connections without answering, and thaw it with SIGCONT.
func (r *Restartable) Signal(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return errNotRunning
	}
	cmd := r.proc.Cmd
	if a := cmd.SysProcAttr; a != nil && a.Setpgid && a.Pgid == 0 {
		return syscall.Kill(-cmd.Process.Pid, sig)
	}
	return syscall.Kill(cmd.Process.Pid, sig)
}
