package proctest

import (
	"os/exec"
	"syscall"
)

// DieWithTests has the kernel kill cmd's process when the test binary that
// started it dies first (a -timeout panic, a killed go test), so no server
// under test outlives the tests and holds their ports. It keeps the other
// SysProcAttr fields cmd has.
func DieWithTests(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
