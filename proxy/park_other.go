//go:build !linux

package proxy

// awaitBytes waits, within the read deadline, for the client's next byte,
// which c's next Read gives back. It reports whether one came.
func awaitBytes(c *meteredConn) bool { return readFirst(c) }
