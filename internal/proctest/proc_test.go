package proctest

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestWaitReady(t *testing.T) {
	open := make(chan struct{})
	closed := make(chan struct{})
	close(closed)
	calls := 0
	for _, tc := range []struct {
		name    string
		exited  <-chan struct{}
		probe   func() error
		wantErr string // "": ready
	}{
		{"ready at once", open, func() error { return nil }, ""},
		{"ready on the third probe", open, func() error {
			if calls++; calls < 3 {
				return errors.New("not yet")
			}
			return nil
		}, ""},
		{"exited", closed, func() error { return errors.New("refused") }, "exited before ready (refused)"},
		{"timeout", open, func() error { return errors.New("refused") }, "not ready after 50ms: refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := WaitReady(tc.exited, 50*time.Millisecond, time.Millisecond, tc.probe)
			if got := errString(err); got != tc.wantErr {
				t.Errorf("WaitReady = %q, want %q", got, tc.wantErr)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestRestartable(t *testing.T) {
	sh := shell(t)
	var r Restartable
	t.Cleanup(r.Stop)
	r.Stop() // stopped: no-op
	if err := r.Start(exec.Command(sh, "-c", "echo starting; exec sleep 60"), func(<-chan struct{}) error { return nil }); err != nil {
		t.Fatal(err)
	}
	done := r.proc.Done
	r.Stop()
	select {
	case <-done:
	default:
		t.Fatal("Stop returned before the process exited")
	}
	r.Stop() // again: no-op

	err := r.Start(exec.Command(sh, "-c", "echo some output; exec sleep 60"), func(<-chan struct{}) error {
		return errors.New("never ready")
	})
	if err == nil || !strings.HasPrefix(err.Error(), "never ready\n") {
		t.Fatalf("Start with a failing ready = %v, want ready's error", err)
	}
	if r.proc != nil {
		t.Fatal("a failed Start left a process")
	}

	err = r.Start(exec.Command(sh, "-c", "echo some output; exit 1"), func(exited <-chan struct{}) error {
		<-exited
		return errors.New("never ready")
	})
	if err == nil || !strings.Contains(err.Error(), "never ready\n") || !strings.Contains(err.Error(), "some output") {
		t.Fatalf("Start with a failing ready = %v, want ready's error and the output", err)
	}
	if r.proc != nil {
		t.Fatal("a failed Start left a process")
	}

	err = r.Start(exec.Command(sh, "-c", "exit 3"), func(exited <-chan struct{}) error {
		return WaitReady(exited, 10*time.Second, time.Millisecond, func() error { return errors.New("refused") })
	})
	if err == nil || !strings.Contains(err.Error(), "exited before ready") {
		t.Fatalf("Start of a process that exits = %v, want exited before ready", err)
	}
}

func shell(t *testing.T) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	return sh
}
