package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// fakePart records its Start and Stop calls in a shared log.
type fakePart struct {
	name     string
	log      *[]string
	startErr error
}

func (f *fakePart) Start(context.Context) error {
	*f.log = append(*f.log, "start "+f.name)
	return f.startErr
}

func (f *fakePart) Stop(context.Context) error {
	*f.log = append(*f.log, "stop "+f.name)
	return nil
}

func TestPartsStopInReverse(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		failing string // the part whose Start fails; "" none
		want    []string
	}{
		{"all start", "", []string{"start a", "start b", "start c", "stop c", "stop b", "stop a"}},
		// The failed part is stopped too (Stop after a failed Start is
		// safe); the ones after it never start.
		{"second fails", "b", []string{"start a", "start b", "stop b", "stop a"}},
		{"first fails", "a", []string{"start a", "stop a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log []string
			ps := &parts{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			var err error
			for _, name := range []string{"a", "b", "c"} {
				p := &fakePart{name: name, log: &log}
				if name == tc.failing {
					p.startErr = boom
				}
				if err = ps.start(context.Background(), name, p); err != nil {
					break
				}
			}
			if (err != nil) != (tc.failing != "") || err != nil && !errors.Is(err, boom) {
				t.Fatalf("start: %v", err)
			}
			ps.stop(context.Background())
			if !slices.Equal(log, tc.want) {
				t.Fatalf("calls %q, want %q", log, tc.want)
			}
			ps.stop(context.Background()) // nothing left to stop
			if len(log) != len(tc.want) {
				t.Fatalf("a second stop called %q", log[len(tc.want):])
			}
		})
	}
}

func TestLoopStopWaitsOrGivesUp(t *testing.T) {
	running := make(chan context.Context)
	ended := make(chan struct{})
	l := &loop{run: func(ctx context.Context) {
		running <- ctx
		<-ctx.Done()
		close(ended)
	}}
	ctx, cancel := context.WithCancel(context.Background())
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	lctx := <-running
	cancel()
	if lctx.Err() != nil {
		t.Fatal("the end of Start's ctx ended the loop's")
	}
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("Stop returned before the loop ended")
	}

	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stuck := &loop{run: func(context.Context) { <-release }}
	if err := stuck.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer scancel()
	if err := stopWithin(time.Hour, stuck).Stop(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop of a stuck loop: %v, want the deadline", err)
	}
}
