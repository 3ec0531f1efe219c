//go:build !linux

package proctest

import "os/exec"

// DieWithTests: only Linux has a parent-death signal; elsewhere the tests'
// own cleanup stops what they start.
func DieWithTests(*exec.Cmd) {}
