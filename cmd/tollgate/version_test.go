package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionLdflags builds the binary as make build and make release do and
// checks that the version and commit set with -X reach `tollgate version`.
func TestVersionLdflags(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH")
	}
	bin := filepath.Join(t.TempDir(), "tollgate")
	build := exec.Command(goBin, "build", "-trimpath",
		"-ldflags", "-s -w -X main.version=v9.9.9 -X main.commit=abc123",
		"-o", bin, ".")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("tollgate version: %v\n%s", err, out)
	}
	if got, want := string(out), "tollgate v9.9.9 abc123\n"; got != want {
		t.Fatalf("tollgate version printed %q, want %q", got, want)
	}
}

// TestVersionInProcess: without -X the version is "dev" and the commit comes
// from the build info ("unknown" when there is none, as in a test binary).
func TestVersionInProcess(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-v"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{arg}, &stdout, &stderr); code != 0 {
			t.Fatalf("run(%q) = %d, stderr %q", arg, code, stderr.String())
		}
		fields := strings.Fields(stdout.String())
		if len(fields) != 3 || fields[0] != "tollgate" || fields[1] != "dev" || fields[2] == "" {
			t.Fatalf("run(%q) printed %q, want \"tollgate dev COMMIT\"", arg, stdout.String())
		}
		if !strings.HasSuffix(stdout.String(), "\n") || stderr.Len() != 0 {
			t.Fatalf("run(%q): stdout %q, stderr %q", arg, stdout.String(), stderr.String())
		}
	}
}
