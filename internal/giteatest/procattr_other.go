//go:build unix && !linux

package giteatest

import "syscall"

// procAttr puts Gitea in its own process group: Stop kills the group, with the
// git and hook processes it runs.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
