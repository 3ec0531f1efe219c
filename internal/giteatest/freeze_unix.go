//go:build unix

package giteatest

import (
	"syscall"
	"testing"
)

// Freeze stops Gitea with SIGSTOP: its port still accepts connections (the
// kernel completes the handshake) but nothing answers, as a hung or
// overloaded Gitea behaves. Every call waits for its client's timeout, where
// a Gitea that is gone (Stop) refuses connections at once. Thaw resumes it;
// Stop and Restart work on a frozen server.
func (s *Server) Freeze(t testing.TB) {
	t.Helper()
	if err := s.web.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("giteatest: freeze: %v", err)
	}
}

// Thaw resumes a frozen Gitea (SIGCONT); it answers again at once.
func (s *Server) Thaw(t testing.TB) {
	t.Helper()
	if err := s.web.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("giteatest: thaw: %v", err)
	}
}
