package main

import "syscall"

// instanceAttr has the kernel kill an e2e tollgate if the test binary dies
// first (a -timeout panic, a killed go test), so none outlives the tests.
func instanceAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
