// Package redistest runs a real redis-server (the Debian package) for one
// test, on a free loopback port, without persistence.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/proctest"
)

// readyTimeout bounds how long a started server may take to answer PING.
const readyTimeout = 10 * time.Second

// Server is one redis-server child process. Stop and Restart let fault tests
// take it away and bring it back on the same address.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	proc proctest.Restartable
}

// Start runs redis-server on a free 127.0.0.1 port and stops it when the test
// ends. A missing redis-server fails the test: it is a declared dependency
// (make deps), not an optional one.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: run `make deps` (apt-get install redis-server)")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop) // runs before the TempDir removal registered above
	var lastErr error
	for range 5 { // the free port can be taken between probing and binding
		if s.port, err = proctest.FreePort(); err != nil {
			t.Fatal(err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Stop kills the server (SIGKILL, as a crash would) and waits for it to exit.
// It is safe to call more than once.
func (s *Server) Stop() { s.proc.Stop() }

// Restart starts a stopped server again on the same port and waits until it
// answers. The dataset survives, as on a production Redis with persistence:
// the server runs with an append-only file fsynced on every write, so what it
// acknowledged before a kill -9 is there after the restart.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

func (s *Server) start() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", s.dir, "--daemonize", "no")
	if err := s.proc.Start(cmd, s.waitReady); err != nil {
		return fmt.Errorf("redis-server on port %d: %w", s.port, err)
	}
	return nil
}

// waitReady polls with PING until the server answers, it exits, or
// readyTimeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	return proctest.WaitReady(exited, readyTimeout, 10*time.Millisecond, func() error { return ping(s.Addr()) })
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line) // e.g. -LOADING
	}
	return nil
}
