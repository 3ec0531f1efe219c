package redistest

import "testing"

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if err := ping(s.Addr(), ""); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	s.Stop()
	if err := ping(s.Addr(), ""); err == nil {
		t.Fatal("after Stop: PING still answered")
	}
	s.Stop() // idempotent
	addr := s.Addr()
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("Restart moved from %s to %s", addr, s.Addr())
	}
	if err := ping(s.Addr(), ""); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
}
