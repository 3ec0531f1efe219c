// Package stripetest runs stripe-mock, Stripe's API fixtures server, for one
// test, on free loopback ports. stripe-mock checks that requests are well
// formed and answers with fixtures; it keeps no state and sends no
// webhooks.
package stripetest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/proctest"
)

// readyTimeout bounds how long a started stripe-mock may take to answer.
const readyTimeout = 10 * time.Second

// EnvBinary names an environment variable that, when set, is the path of
// the stripe-mock binary to run.
const EnvBinary = "STRIPE_MOCK_BIN"

// Mock is one stripe-mock child process. Stop and Restart let fault tests
// take it away and bring it back on the same ports.
type Mock struct {
	tb        testing.TB
	bin       string
	httpPort  int
	httpsPort int
	proc      proctest.Restartable
}

// SkipShort skips tb under go test -short, the hermetic inner loop, which
// runs no stripe-mock. Start calls it first; a test that does expensive setup
// before starting stripe-mock calls it before that setup.
func SkipShort(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs stripe-mock; -short")
	}
}

// Start runs stripe-mock with its HTTP and HTTPS listeners on free
// 127.0.0.1 ports, waits until it answers and stops it when the test ends.
// A missing binary fails the test: it is a declared dependency (make
// stripe-mock), not an optional one. See Binary for where it is looked for.
// Under -short the test is skipped (SkipShort).
func Start(tb testing.TB) *Mock {
	tb.Helper()
	SkipShort(tb)
	bin, err := Binary()
	if err != nil {
		tb.Fatal(err)
	}
	m := &Mock{tb: tb, bin: bin}
	tb.Cleanup(m.Stop)
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		if m.httpPort, err = proctest.FreePort(); err != nil {
			tb.Fatal(err)
		}
		if m.httpsPort, err = proctest.FreePort(); err != nil {
			tb.Fatal(err)
		}
		if m.httpPort == m.httpsPort {
			continue
		}
		if lastErr = m.start(); lastErr == nil {
			return m
		}
	}
	tb.Fatalf("stripetest: %v", lastErr)
	return nil
}

// Binary finds stripe-mock: the path in $STRIPE_MOCK_BIN, else
// ~/.cache/tollgate/bin/stripe-mock (where make stripe-mock installs it),
// else stripe-mock on PATH, else ~/go/bin/stripe-mock (go install's
// default).
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if !executable(p) {
			return "", fmt.Errorf("stripetest: %s=%q is not an executable file", EnvBinary, p)
		}
		return p, nil
	}
	home, _ := os.UserHomeDir()
	if home != "" {
		if p := filepath.Join(home, ".cache", "tollgate", "bin", "stripe-mock"); executable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	if home != "" {
		if p := filepath.Join(home, "go", "bin", "stripe-mock"); executable(p) {
			return p, nil
		}
	}
	return "", errors.New("stripe-mock not found: run `make stripe-mock` (or set " + EnvBinary + ")")
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// URL is the base URL of the HTTP listener, e.g. http://127.0.0.1:41234
// (a StripeConfig api_base).
func (m *Mock) URL() string { return "http://" + m.addr(m.httpPort) }

// HTTPSAddr is host:port of the HTTPS listener (a self-signed certificate).
func (m *Mock) HTTPSAddr() string { return m.addr(m.httpsPort) }

func (m *Mock) addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Stop kills stripe-mock and waits for it to exit. It is safe to call more
// than once.
func (m *Mock) Stop() { m.proc.Stop() }

// Restart stops stripe-mock if it runs and starts it again on the same
// ports, waiting until it answers.
func (m *Mock) Restart() {
	m.tb.Helper()
	m.Stop()
	if err := m.start(); err != nil {
		m.tb.Fatalf("stripetest: restart: %v", err)
	}
}

func (m *Mock) start() error {
	cmd := exec.Command(m.bin, "-http-addr", m.addr(m.httpPort), "-https-addr", m.addr(m.httpsPort))
	if err := m.proc.Start(cmd, m.waitReady); err != nil {
		return fmt.Errorf("stripe-mock on ports %d/%d: %w", m.httpPort, m.httpsPort, err)
	}
	return nil
}

// waitReady polls until the HTTP listener answers a request (any status:
// stripe-mock answers 401 without a key) and the HTTPS one accepts a
// connection, the process exits, or readyTimeout passes.
func (m *Mock) waitReady(exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	return proctest.WaitReady(exited, readyTimeout, 10*time.Millisecond, func() error { return m.probe(client) })
}

func (m *Mock) probe(client *http.Client) error {
	resp, err := client.Get(m.URL() + "/v1/customers")
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.Header.Get("Stripe-Mock-Version") == "" {
		return fmt.Errorf("%s answered without Stripe-Mock-Version: another server", m.URL())
	}
	c, err := net.DialTimeout("tcp", m.HTTPSAddr(), time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}
