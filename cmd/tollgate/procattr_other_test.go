//go:build !linux

package main

import "syscall"

// instanceAttr: without Pdeathsig, an e2e tollgate is stopped by the tests'
// own cleanup only.
func instanceAttr() *syscall.SysProcAttr { return nil }
