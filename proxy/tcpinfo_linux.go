//go:build linux

package proxy

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpAcked reads the kernel's view of a client connection (TCP_INFO): the
// bytes the peer acknowledged, and whether the connection is already gone
// (reset by the peer: state CLOSE). ok is false when c is not backed by a
// TCP socket or the kernel would not say.
func tcpAcked(c net.Conn) (acked int64, gone, ok bool) {
	tc := rawTCP(c)
	if tc == nil {
		return 0, false, false
	}
	sc, err := tc.SyscallConn()
	if err != nil {
		return 0, false, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := sc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false, false
	}
	// The kernel's TCP states are one enum; x/sys names it for BPF.
	return int64(info.Bytes_acked), info.State == unix.BPF_TCP_CLOSE, true
}

// rawTCP finds the TCP socket under a client connection's wrappers (TLS,
// the listener's guard, the raw byte counter); nil if there is none.
func rawTCP(c net.Conn) *net.TCPConn {
	for range 8 {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case interface{ NetConn() net.Conn }: // *tls.Conn, guardConn, rawCounter
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
