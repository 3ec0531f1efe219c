package redistest

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// do sends one inline command and returns the first line of the answer.
func do(t *testing.T, addr, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func TestRestartKeepsDataRestartEmptyDoesNot(t *testing.T) {
	s := Start(t)
	if got := do(t, s.Addr(), "SET k v"); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	s.Restart()
	if got := do(t, s.Addr(), "EXISTS k"); got != ":1\r\n" {
		t.Fatalf("after Restart, EXISTS k = %q; want :1", got)
	}
	addr := s.Addr()
	s.RestartEmpty()
	if s.Addr() != addr {
		t.Fatalf("RestartEmpty moved from %s to %s", addr, s.Addr())
	}
	if got := do(t, s.Addr(), "EXISTS k"); got != ":0\r\n" {
		t.Fatalf("after RestartEmpty, EXISTS k = %q; want :0", got)
	}
}
