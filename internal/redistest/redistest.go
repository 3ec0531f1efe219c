// Package redistest runs a real redis-server (the Debian package) for one
// test, on a free loopback port, without persistence.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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
	opts Options

	mu sync.Mutex            // guards the clients below
	rc *redis.Client         // to this server, for the helpers
	sc *redis.SentinelClient // to this sentinel, for the helpers
}

// Options change how a Server runs. The zero value is a plain Redis.
type Options struct {
	// Password, when set, is required from clients (requirepass).
	Password string
	// Args are more redis-server arguments, as "--name", "value" pairs.
	Args []string
	// Sentinel runs the server as a sentinel with this configuration
	// (written to a file; port, bind and dir are added).
	Sentinel string
}

// SkipShort skips t under go test -short, the hermetic inner loop, which runs
// no redis-server. Start, StartWith, StartCluster and StartSentinel call it
// first; a test that does expensive setup before starting Redis calls it
// before that setup.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs redis-server; -short")
	}
}

// Start runs redis-server on a free 127.0.0.1 port and stops it when the test
// ends. A missing redis-server fails the test: it is a declared dependency
// (make deps), not an optional one. Under -short the test is skipped
// (SkipShort).
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	SkipShort(t)
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: run `make deps` (apt-get install redis-server)")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), opts: opts}
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

// NewClient returns a client of the server (with its password, if any),
// closed when the test ends.
func (s *Server) NewClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.opts.Password})
	t.Cleanup(func() { c.Close() })
	return c
}

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

// Port is the server's port.
func (s *Server) Port() int { return s.port }

func (s *Server) start() error {
	var cmd *exec.Cmd
	if s.opts.Sentinel != "" {
		conf := filepath.Join(s.dir, "sentinel.conf") // rewritten by the sentinel
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n%s\n", s.port, s.dir, s.opts.Sentinel)
		if s.opts.Password != "" {
			body += "requirepass " + s.opts.Password + "\n"
		}
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			return err
		}
		cmd = exec.Command(s.bin, conf, "--sentinel")
	} else {
		args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", s.dir, "--daemonize", "no"}
		if s.opts.Password != "" {
			args = append(args, "--requirepass", s.opts.Password)
		}
		cmd = exec.Command(s.bin, append(args, s.opts.Args...)...)
	}
	if err := s.proc.Start(cmd, s.waitReady); err != nil {
		return fmt.Errorf("redis-server on port %d: %w", s.port, err)
	}
	return nil
}

// waitReady polls with PING until the server answers, it exits, or
// readyTimeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	return proctest.WaitReady(exited, readyTimeout, 10*time.Millisecond, func() error { return ping(s.Addr(), s.opts.Password) })
}

func ping(addr, password string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if password != "" {
		if _, err := fmt.Fprintf(c, "AUTH %s\r\n", password); err != nil {
			return err
		}
		if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
			return fmt.Errorf("AUTH answered %q (%v)", line, err)
		}
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line) // e.g. -LOADING
	}
	return nil
}
