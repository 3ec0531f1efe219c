package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn // nil: only what is defined here is called
	read     []time.Time
	write    []time.Time
	onRead   func()
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.read = append(c.read, t)
	return nil
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.write = append(c.write, t)
	return nil
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.onRead != nil {
		c.onRead()
	}
	return 0, io.EOF
}

func (c *deadlineConn) Write(p []byte) (int, error) { return len(p), nil }

// TestWriteDeadlineSlack: a write deadline that moved forward by no more
// than a 64th of limits.write_timeout since the one on the socket is not
// set again (the socket's is at most that much earlier); any other change
// is. Paced writes still see the deadline asked for.
func TestWriteDeadlineSlack(t *testing.T) {
	c := &deadlineConn{}
	mc := newMeteredConn(c)
	mc.park = newParkListener(nil, Limits{WriteTimeout: 64 * time.Second}) // slack 1s
	t0 := time.Now().Add(64 * time.Second)
	for _, step := range []struct {
		t   time.Time
		set bool
	}{
		{t0, true},
		{t0.Add(500 * time.Millisecond), false},
		{t0.Add(time.Second), false},
		{t0.Add(1500 * time.Millisecond), true},
		{t0, true}, // earlier: set at once
		{time.Time{}, true},
		{time.Time{}, true},
		{t0, true},
	} {
		n := len(c.write)
		must(t, mc.SetWriteDeadline(step.t))
		if set := len(c.write) > n; set != step.set {
			t.Fatalf("deadline %v after %v: set on the socket %v, want %v", step.t, c.write[:n], set, step.set)
		}
		if !mc.deadline().Equal(step.t) {
			t.Fatalf("paced writes see %v, want %v", mc.deadline(), step.t)
		}
	}
}

// TestIdleReadDeadlineSlack: between requests the socket's read deadline
// (parkAfter from now) is set again only once it moved forward by more
// than parkSlack, while the keep-alive deadline for the parked wait is
// always the latest; a read timeout applied by a read in between makes the
// next one be set.
func TestIdleReadDeadlineSlack(t *testing.T) {
	c := &deadlineConn{}
	mc := newMeteredConn(c)
	const idle = 120 * time.Second
	mc.park = newParkListener(nil, Limits{IdleTimeout: idle})
	base := time.Now()
	between := func(after time.Duration, set bool) {
		t.Helper()
		connState(mc, fasthttp.StateIdle)
		n := len(c.read)
		keepAlive := base.Add(after + idle)
		must(t, mc.SetReadDeadline(keepAlive))
		if got := len(c.read) > n; got != set {
			t.Fatalf("%v: set on the socket %v, want %v", after, got, set)
		}
		if set && !c.read[n].Equal(base.Add(after+parkAfter)) {
			t.Fatalf("%v: socket deadline %v, want parkAfter later", after, c.read[n].Sub(base))
		}
		if !mc.idleUntil.Equal(keepAlive) {
			t.Fatalf("%v: keep-alive deadline %v, want %v", after, mc.idleUntil, keepAlive)
		}
	}
	between(0, true)
	between(parkSlack/2, false)
	between(parkSlack, false)
	between(parkSlack+time.Millisecond, true)

	// A request whose head needed a second read: the read timeout went on
	// the socket, so the deadline between requests is set again.
	connState(mc, fasthttp.StateActive)
	must(t, mc.SetReadDeadline(base.Add(30*time.Second)))
	if len(c.read) != 2 {
		t.Fatalf("read timeout set at once: %v", c.read)
	}
	_, _ = mc.Read(make([]byte, 1))
	if len(c.read) != 3 {
		t.Fatalf("read timeout not set by the read: %v", c.read)
	}
	between(parkSlack+2*time.Millisecond, true)
}

// TestNextDeadline: an upstream connection sets its I/O deadline again only
// once it would move forward by more than a 64th of the timeout.
func TestNextDeadline(t *testing.T) {
	c := &deadlineConn{}
	ic := &idleConn{Conn: c, timeout: time.Hour}
	_, _ = ic.Write(nil)
	_, _ = ic.Write(nil)
	_, _ = ic.Read(nil)
	_, _ = ic.Read(nil)
	if len(c.write) != 1 || len(c.read) != 1 {
		t.Fatalf("deadlines set: %d write, %d read; want 1 each", len(c.write), len(c.read))
	}
	if d := time.Until(c.read[0]); d < time.Hour-time.Minute || d > time.Hour {
		t.Fatalf("read deadline in %v, want the timeout", d)
	}
	ic.rdSet.Store(time.Now().Add(time.Hour - 2*time.Hour/64).UnixNano()) // as if set a while ago
	_, _ = ic.Read(nil)
	if len(c.read) != 2 {
		t.Fatalf("a deadline more than a 64th of the timeout old was kept")
	}
}
