//go:build unix

package proctest

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillGroup checks that a process leading its own group is killed with
// the children it started.
func TestKillGroup(t *testing.T) {
	sh := shell(t)
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	cmd := exec.Command(sh, "-c", "sleep 60 >/dev/null 2>&1 & echo $!; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	err = WaitReady(p.Done, 10*time.Second, time.Millisecond, func() error {
		n, err := strconv.Atoi(strings.TrimSpace(p.Out.String()))
		child = n
		return err
	})
	if err != nil {
		p.Kill()
		t.Fatal(err)
	}
	p.Kill()
	// The orphaned child is reaped by init, or left a zombie where init
	// does not reap: either way it is no longer running.
	err = WaitReady(make(chan struct{}), 10*time.Second, time.Millisecond, func() error {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat")
		if err != nil {
			return nil // gone
		}
		if _, rest, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(rest, "Z") {
			return nil
		}
		return errors.New("child still running")
	})
	if err != nil {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Fatal(err)
	}
}
