package proxy

import (
	"syscall"
)

// awaitBytes waits, within the read deadline, until the client's next bytes
// arrive on c's socket, without reading them: nothing is buffered above the
// socket while it waits (TLS included: the idle read that ended in parking
// was waiting on the socket). It reports whether bytes came.
func awaitBytes(c *meteredConn) bool {
	tc := rawTCP(c.Conn)
	if tc == nil {
		return readFirst(c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return readFirst(c)
	}
	var peek [1]byte
	n := 0
	err = rc.Read(func(fd uintptr) bool {
		var rerr error
		n, _, rerr = syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return rerr != syscall.EAGAIN // done: bytes, end of stream, or an error
	})
	return err == nil && n > 0
}
