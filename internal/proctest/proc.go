package proctest

import (
	"fmt"
	"net"
	"os/exec"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago. Another
// process may take it before the caller binds it, so callers retry a failed
// start on a new port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Proc is a started child process.
type Proc struct {
	Cmd *exec.Cmd
	// Out collects its stdout and stderr.
	Out *Output
	// Done is closed once the process has exited and been waited for.
	Done <-chan struct{}
}

// Start starts cmd with its output collected in Proc.Out and waits for it
// in the background, so Done tells when it exits. The process dies with
// the test binary (DieWithTests).
func Start(cmd *exec.Cmd) (*Proc, error) {
	DieWithTests(cmd)
	out := new(Output)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return &Proc{Cmd: cmd, Out: out, Done: done}, nil
}

// Kill sends SIGKILL, as a crash would, and waits until the process has
// exited. A process started as the leader of its own process group
// (SysProcAttr.Setpgid with Pgid 0, on unix) is killed with its group, so
// that the children it runs go too.
func (p *Proc) Kill() {
	_ = kill(p.Cmd)
	<-p.Done
}

// WaitReady calls probe every interval until it returns nil, and fails when
// exited is closed first (the process is gone) or timeout passes. The error
// carries probe's last error.
func WaitReady(exited <-chan struct{}, timeout, interval time.Duration, probe func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := probe()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before ready (%v)", err)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %v", timeout, err)
		}
	}
}
