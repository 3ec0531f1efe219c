//go:build unix

package proctest

import (
	"os/exec"
	"syscall"
)

// kill sends SIGKILL to cmd's process, or to its process group when it
// leads one of its own.
func kill(cmd *exec.Cmd) error {
	if a := cmd.SysProcAttr; a != nil && a.Setpgid && a.Pgid == 0 {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return cmd.Process.Kill()
}
