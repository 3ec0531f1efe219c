package giteatest

import "syscall"

// procAttr puts Gitea in its own process group (Stop kills the group, with
// the git and hook processes it runs) and has the kernel kill it if the test
// binary dies first (a panic or a -timeout), so no Gitea outlives the tests.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
