package proxy

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

// pollSweep is how often the poller closes parked connections whose
// keep-alive deadline has passed: limits.idle_timeout holds to within it.
const pollSweep = 250 * time.Millisecond

// poller watches the sockets of a listener's parked connections with one
// epoll set and one goroutine, the way an event-loop server keeps idle
// connections: a socket that becomes readable is handed back to fasthttp,
// one whose peer closed or whose keep-alive deadline passed is closed.
// Sockets are registered one-shot and level-triggered beside Go's own
// (edge-triggered) registration of the same socket, which does not notice:
// the poller only peeks (recv MSG_PEEK) and never reads.
//
// The poller's goroutine never blocks in epoll_wait: the epoll set is itself
// a descriptor Go's netpoller watches (ep), readable when a parked socket
// is, and epoll_wait is called with a zero timeout once it is. A blocking
// epoll_wait would hold the goroutine's P until sysmon takes it back (up to
// 10 ms when the process was idle), stalling every other connection when
// GOMAXPROCS is 1.
type poller struct {
	l    *parkListener
	epfd int
	ep   *os.File // epfd, for the netpoller; its read deadline times sweeps

	mu   sync.Mutex
	fds  map[int32]polled // registered sockets by descriptor
	seq  int32            // tags each registration: a reused descriptor is not mistaken for its predecessor
	done bool
}

type polled struct {
	c   *meteredConn
	seq int32
}

// newPoller starts l's poller; nil if the kernel refuses an epoll set (the
// connections then wait on goroutines).
func newPoller(l *parkListener) *poller {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if syscall.SetNonblock(epfd, true) != nil {
		_ = syscall.Close(epfd)
		return nil
	}
	ep := os.NewFile(uintptr(epfd), "park-epoll") // non-blocking: the netpoller takes it
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil
	}
	p := &poller{l: l, epfd: epfd, ep: ep, fds: map[int32]polled{}}
	go p.loop(rc)
	return p
}

// add watches c's socket; false if c has none (or the poller has closed).
// The descriptor stays valid while c is registered: c is closed only by
// whoever removes it from the poller.
func (p *poller) add(c *meteredConn) bool {
	fd, ok := socketFD(c)
	if !ok {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return false
	}
	p.seq++
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(fd), Pad: p.seq}
	if syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev) != nil {
		return false
	}
	p.fds[int32(fd)] = polled{c, p.seq}
	return true
}

// remove stops watching c (before it is closed).
func (p *poller) remove(c *meteredConn) {
	fd, ok := socketFD(c)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.fds[int32(fd)]; ok && e.c == c {
		p.forget(int32(fd))
	}
}

// forget unregisters fd; p.mu is held.
func (p *poller) forget(fd int32) {
	delete(p.fds, fd)
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
}

// close stops the loop, which closes the epoll set; the connections are
// the listener's to close.
func (p *poller) close() {
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
}

func (p *poller) loop(rc syscall.RawConn) {
	events := make([]syscall.EpollEvent, 128)
	sweep := time.Now().Add(pollSweep)
	var ready, gone []*meteredConn
	for {
		n, err := p.wait(rc, events, sweep)
		now := time.Now()
		ready, gone = ready[:0], gone[:0]
		p.mu.Lock()
		if err != nil && err != syscall.EINTR {
			p.done = true // the epoll set is unusable: close what it holds
		}
		for _, ev := range events[:max(n, 0)] {
			e, ok := p.fds[ev.Fd]
			if !ok || e.seq != ev.Pad {
				continue // removed, or its descriptor reused since
			}
			switch peek(int(ev.Fd)) {
			case peekNothing: // woken without bytes: watch again
				rearm := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: ev.Fd, Pad: ev.Pad}
				if syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(ev.Fd), &rearm) == nil {
					continue
				}
				gone = append(gone, e.c)
			case peekBytes:
				ready = append(ready, e.c)
			default:
				gone = append(gone, e.c)
			}
			p.forget(ev.Fd)
		}
		if p.done || !now.Before(sweep) {
			for fd, e := range p.fds {
				if p.done || !now.Before(e.c.idleUntil) {
					gone = append(gone, e.c)
					p.forget(fd)
				}
			}
			sweep = now.Add(pollSweep)
		}
		done := p.done
		p.mu.Unlock()
		for _, c := range ready {
			if p.l.take(c) {
				p.l.handBack(c)
			}
		}
		for _, c := range gone {
			if p.l.take(c) {
				_ = c.closeConn() // the keep-alive deadline passed, or the client left
			}
		}
		if done {
			_ = p.ep.Close()
			return
		}
	}
}

// wait returns the events of the parked sockets that became readable (n),
// or none once sweep has come; a non-nil err other than EINTR means the
// epoll set is unusable.
func (p *poller) wait(rc syscall.RawConn, events []syscall.EpollEvent, sweep time.Time) (n int, err error) {
	if err := p.ep.SetReadDeadline(sweep); err != nil {
		return 0, err
	}
	rerr := rc.Read(func(uintptr) bool {
		n, err = syscall.EpollWait(p.epfd, events, 0)
		return n != 0 || err != nil // nothing yet: wait for the netpoller
	})
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		return 0, nil
	}
	if err == nil {
		err = rerr
	}
	return n, err
}

type peekResult int

const (
	peekNothing peekResult = iota // no bytes yet
	peekBytes                     // the client's next request began
	peekGone                      // end of stream or an error
)

// peek looks at fd's next byte without reading it.
func peek(fd int) peekResult {
	var b [1]byte
	n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case n > 0:
		return peekBytes
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return peekNothing
	}
	return peekGone
}

// socketFD is the descriptor of the TCP socket under c.
func socketFD(c *meteredConn) (int, bool) {
	tc := rawTCP(c.Conn)
	if tc == nil {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if rc.Control(func(s uintptr) { fd = int(s) }) != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}
