//go:build !linux

package proxy

// poller is Linux's (park_linux.go); elsewhere parked connections wait on
// goroutines of their own.
type poller struct{}

func newPoller(*parkListener) *poller { return nil }
func (*poller) add(*meteredConn) bool { return false }
func (*poller) remove(*meteredConn)   {}
func (*poller) close()                {}
