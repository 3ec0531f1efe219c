// Package giteatest runs a real Gitea (built once by `make gitea` and cached
// outside git) for end-to-end tests: sqlite in a temp dir, a free loopback
// port, an admin user with an all-scopes access token, and helpers over
// Gitea's HTTP API to shape users, orgs, repositories, branches and files.
package giteatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/proctest"
)

// Version is the Gitea release that `make gitea` builds and Start runs.
const Version = "1.26.1"

const (
	// readyTimeout bounds how long `gitea web` may take to answer
	// /api/healthz; it is ready in about a second here.
	readyTimeout = 60 * time.Second
	// cliTimeout bounds each setup command (migrate, user create, token).
	cliTimeout = 60 * time.Second
	// portAttempts is how often a start is retried on a fresh port: the free
	// port can be taken between probing and binding.
	portAttempts = 5
)

// Server is one `gitea web` child process with its own data. Stop and Restart
// let fault tests take it away and bring it back on the same address with the
// same data.
type Server struct {
	t       testing.TB // nil for a server from New: Restart then panics on error
	bin     string     // the gitea binary
	static  string     // STATIC_ROOT_PATH: templates/ options/ public/
	dir     string     // everything Gitea writes lives under here
	conf    string     // dir/custom/conf/app.ini
	secrets secrets
	port    int
	admin   string
	token   string
	client  *http.Client
	web     proctest.Restartable // `gitea web`
}

type secrets struct{ secretKey, internalToken, jwtSecret string }

// SkipShort skips t under go test -short, the hermetic inner loop, which runs
// no Gitea. Start calls it first; a test that does expensive setup before
// starting Gitea calls it before that setup.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs gitea; -short")
	}
}

// Start runs Gitea for one test on a free 127.0.0.1 port, with sqlite and all
// other files in t.TempDir(), an admin user and an access token with all
// scopes, and stops it when the test ends. A missing binary fails the test: it
// is a declared dependency (make gitea), not an optional one. Under -short the
// test is skipped (SkipShort).
func Start(t testing.TB) *Server {
	t.Helper()
	SkipShort(t)
	s, err := start(t.TempDir(), t)
	if err != nil {
		t.Fatalf("giteatest: %v", err)
	}
	t.Cleanup(s.Stop) // runs before the TempDir removal registered above
	return s
}

// New is Start for a TestMain, where there is no testing.TB: Gitea keeps its
// files under dir, which the caller creates and removes, and the caller calls
// Stop before removing it. The helpers take the calling test's testing.TB, so
// one server can serve every test of a package.
func New(dir string) (*Server, error) { return start(dir, nil) }

// start sets Gitea up under dir and runs it; on error nothing is left running.
func start(dir string, t testing.TB) (*Server, error) {
	bin, static, err := binary()
	if err != nil {
		return nil, err
	}
	s := &Server{
		t: t, bin: bin, static: static, dir: dir,
		conf:   filepath.Join(dir, "custom", "conf", "app.ini"),
		admin:  "tgadmin",
		client: &http.Client{Timeout: 30 * time.Second},
	}
	s.secrets = secrets{secretKey: randomHex(32), internalToken: randomHex(32), jwtSecret: randomJWTSecret()}
	if s.port, err = proctest.FreePort(); err != nil {
		return nil, err
	}
	if err := s.writeConfig(); err != nil {
		return nil, err
	}
	if _, err := s.cli("migrate"); err != nil {
		return nil, err
	}
	if _, err := s.cli("admin", "user", "create", "--username", s.admin, "--password", randomHex(16),
		"--email", s.admin+"@example.com", "--admin", "--must-change-password=false"); err != nil {
		return nil, err
	}
	token, err := s.cli("admin", "user", "generate-access-token", "--username", s.admin,
		"--token-name", "giteatest", "--scopes", "all", "--raw")
	if err != nil {
		return nil, err
	}
	// As root, every gitea command also logs a warning line, before or
	// after the token (two streams, interleaved): the token is the line of
	// 40 hex digits.
	if s.token = accessToken(token); s.token == "" {
		return nil, fmt.Errorf("generate-access-token printed %q, want a line with the token (40 hex digits)", token)
	}
	for attempt := 1; ; attempt++ {
		err := s.startWeb()
		if err == nil {
			return s, nil
		}
		if attempt == portAttempts {
			return nil, err
		}
		if s.port, err = proctest.FreePort(); err != nil {
			return nil, err
		}
		if err := s.writeConfig(); err != nil {
			return nil, err
		}
	}
}

// URL is the server's base URL, http://127.0.0.1:PORT, without a trailing
// slash.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Token is the admin's access token (scopes: all), sent as
// "Authorization: token <Token>".
func (s *Server) Token() string { return s.token }

// AdminUser is the name of the site administrator that owns Token.
func (s *Server) AdminUser() string { return s.admin }

// Stop kills Gitea and its children (SIGKILL to the process group, as a crash
// would) and waits for it to exit. It is safe to call more than once.
func (s *Server) Stop() { s.web.Stop() }

// Restart stops Gitea if it runs and starts it again on the same port with
// the same data, and waits until it is ready. It fails the test that started
// the server (a server from New panics instead).
func (s *Server) Restart() {
	s.Stop()
	if err := s.startWeb(); err != nil {
		if s.t == nil {
			panic(fmt.Sprintf("giteatest: restart: %v", err))
		}
		s.t.Helper()
		s.t.Fatalf("giteatest: restart: %v", err)
	}
}

// startWeb runs `gitea web` in its own process group (so that Stop kills
// the group) and waits for /api/healthz; on failure the process is gone and
// the error carries its output and log.
func (s *Server) startWeb() error {
	cmd := exec.Command(s.bin, "web", "--config", s.conf)
	cmd.Dir, cmd.Env = s.dir, s.env()
	cmd.SysProcAttr = procAttr()
	if err := s.web.Start(cmd, s.waitReady); err != nil {
		return fmt.Errorf("gitea web on port %d: %w%s", s.port, err, s.logTail())
	}
	return nil
}

// waitReady polls /api/healthz until it answers 200, the process exits, or
// readyTimeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	return proctest.WaitReady(exited, readyTimeout, 20*time.Millisecond, func() error {
		resp, err := client.Get(s.URL() + "/api/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/api/healthz answered %s", resp.Status)
		}
		return nil
	})
}

// cli runs one gitea subcommand against the config and returns its stdout.
func (s *Server) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append(args, "--config", s.conf)...)
	cmd.Dir, cmd.Env = s.dir, s.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("gitea %s: %w\n%s%s%s", strings.Join(args[:min(len(args), 3)], " "), err,
			stdout.String(), stderr.String(), s.logTail())
	}
	return stdout.String(), nil
}

// env is the parent's environment without any GITEA_* or GIT_* variable (they
// would configure Gitea or the git it runs), with HOME and the work dir inside
// the temp dir.
func (s *Server) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GITEA_") || strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+filepath.Join(s.dir, "home"),
		"GITEA_WORK_DIR="+s.dir,
		"GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT=true",
	)
}

// logTail is the end of Gitea's own log file, for error messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "log", "gitea.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "gitea.log (tail):\n" + string(b)
}

// binary finds the cached build from `make gitea`.
func binary() (bin, static string, err error) {
	root := os.Getenv("TOLLGATE_CACHE") // the same override as build-gitea.sh
	if root == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", "", err
		}
		root = filepath.Join(home, ".cache", "tollgate")
	}
	static = filepath.Join(root, "gitea-"+Version)
	bin = filepath.Join(static, "gitea")
	if _, err := os.Stat(bin); err != nil {
		return "", "", fmt.Errorf("gitea %s not built (%v): run `make gitea` (builds it once into %s, ~4 minutes)", Version, err, static)
	}
	for _, d := range []string{"options", "templates", "public"} {
		if _, err := os.Stat(filepath.Join(static, d)); err != nil {
			return "", "", fmt.Errorf("gitea cache incomplete (%v): remove %s and run `make gitea`", err, static)
		}
	}
	return bin, static, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// randomJWTSecret is what `gitea generate secret JWT_SECRET` prints: 32 random
// bytes, base64url without padding. Gitea rewrites app.ini if it is not that.
func randomJWTSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// accessToken is the line of out that is a Gitea access token (40
// lower-case hex digits), "" when none is.
func accessToken(out string) string {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if len(line) == 40 && strings.Trim(line, "0123456789abcdef") == "" {
			return line
		}
	}
	return ""
}
