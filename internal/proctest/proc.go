package proctest

import (
	"net"
	"os/exec"
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
// in the background, so Done tells when it exits.
func Start(cmd *exec.Cmd) (*Proc, error) {
	out := new(Output)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return &Proc{Cmd: cmd, Out: out, Done: done}, nil
}
