package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Every public listener is a guardListener under fasthttp (and under TLS on
// the HTTPS listener). It does three things fasthttp's Server.Serve does not:
//
//   - Accept errors are retried, not returned: fasthttp's Serve returns on the
//     first one that is not a timeout, and tollgate would exit because a
//     client filled the file-descriptor table (EMFILE). The retry backs off
//     as net/http's does, 5 ms doubling to 1 s; when descriptors ran out it
//     first closes a connection that has not sent a byte for a second, so a
//     waiting client is taken at once.
//   - Connections per client address are capped (limits.max_conns_per_ip)
//     beneath TLS: a refused TLS connection is closed without a handshake.
//     fasthttp's own per-IP cap answers from its accept loop, which on a TLS
//     connection runs the handshake there, without a deadline.
//   - Open connections are capped (capacity: below limits.concurrency, and
//     at most a quarter of the descriptor limit). At the cap, the oldest
//     connection that has not sent a byte is closed to take the new one;
//     with none, the new one is refused.
//
// Refused plain connections get a short page (429 per address, 503 at the
// cap) and are closed; if the client had already sent its request, the close
// may reset the connection before the page is read.

// Public listener names, as metric label values.
const (
	listenerHTTP  = "http"  // plain HTTP: Serve and ServeRedirect
	listenerHTTPS = "https" // ServeTLS
)

// Refusal reasons, as metric label values.
const (
	refusedPerIP    = iota // the address holds limits.max_conns_per_ip already
	refusedCapacity        // the listener is full and every connection has sent something
	numRefusals
)

var refusalNames = [numRefusals]string{"per_ip", "capacity"}

// Back-off after a failed accept, as net/http's Server.Serve.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// evictAfter is how long a connection must have been silent before a listener
// out of descriptors closes it. accept(2) fails with EMFILE whether or not a
// connection waits, so without it the listener would close the connection it
// has just taken, before its first bytes are read.
const evictAfter = time.Second

// How often a listener may log that accepts fail, and that it refused or
// evicted connections; each line carries the count since the last one.
const (
	acceptLogEvery = time.Second
	shedLogEvery   = time.Minute
)

// descriptorShare is the part of the process's file-descriptor limit one
// public listener may hold: with the HTTP and HTTPS listeners full and an
// upstream connection for each HTTPS one, a quarter is left for files, stores,
// the admin listener and the rest.
const descriptorShare = 4

// guard wraps ln, a public listener, in the limits of [limits].
func (p *Proxy) guard(ln net.Listener, name string) net.Listener {
	return newGuardListener(ln, guardConfig{
		name:     name,
		tls:      name == listenerHTTPS,
		perIP:    p.limits.MaxConnsPerIP,
		capacity: capacity(p.limits.Concurrency, descriptorLimit()),
		trusted:  p.trusted,
		metrics:  p.metrics.listener(name),
		pages:    p.errPages,
		log:      p.log,
	})
}

// capacity is how many connections one public listener holds open: a
// sixteenth of fasthttp's workers (limits.concurrency) stays free, so that a
// connection taken in place of one just closed finds a worker while the old
// one's is still finishing, and the listener keeps to its share of the
// file descriptors.
func capacity(concurrency, descriptors int) int {
	return max(min(concurrency-max(concurrency/16, 1), descriptors/descriptorShare), 1)
}

type guardConfig struct {
	name     string
	tls      bool           // refused connections are closed without an answer
	perIP    int            // connections per client address; 0 or less: no cap
	capacity int            // connections open at once
	trusted  []netip.Prefix // peers exempt from perIP: load balancers
	metrics  listenerMetrics
	pages    *ErrorPages // the pages of refusals on plain HTTP; nil: built-in
	log      *slog.Logger
	// now and wait replace the clock in tests; wait sleeps d and reports
	// false when the listener was closed meanwhile.
	now  func() time.Time
	wait func(l *guardListener, d time.Duration) bool
}

type guardListener struct {
	net.Listener
	cfg       guardConfig
	closed    chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	open   int
	byAddr map[netip.Addr]int // open connections per client key, when perIP is on
	unused connQueue          // open connections that have not sent a byte, oldest first
	// What was logged last, and what happened since.
	acceptLogged, shedLogged time.Time
	acceptErrors             int
	refused                  [numRefusals]int
	evicted                  int
}

func newGuardListener(ln net.Listener, cfg guardConfig) *guardListener {
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.wait == nil {
		cfg.wait = (*guardListener).sleep
	}
	cfg.metrics.limit.Set(float64(cfg.capacity))
	l := &guardListener{Listener: ln, cfg: cfg, closed: make(chan struct{})}
	if cfg.perIP > 0 {
		l.byAddr = map[netip.Addr]int{}
	}
	return l
}

// Accept returns the next connection within the limits. It returns an error
// only when the listener is closed or accept(2) fails in a way that retrying
// cannot mend (EBADF, EINVAL: the socket itself is broken).
func (l *guardListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			delay = 0
			if gc := l.admit(c); gc != nil {
				return gc, nil
			}
			continue
		}
		if !retryable(err) {
			return nil, err
		}
		l.cfg.metrics.acceptErrors.Inc()
		if outOfDescriptors(err) && l.evict(evictAfter) {
			l.noteAcceptError(err, 0)
			continue // the freed descriptor takes the waiting connection, if one waits
		}
		delay = min(max(2*delay, minAcceptDelay), maxAcceptDelay)
		l.noteAcceptError(err, delay)
		if !l.cfg.wait(l, delay) {
			return nil, net.ErrClosed
		}
	}
}

// Close closes the listener; an Accept waiting to retry returns at once.
func (l *guardListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *guardListener) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.closed:
		return false
	}
}

// admit counts c in, or refuses it (nil). At the cap it evicts the oldest
// unused connection to make room.
func (l *guardListener) admit(c net.Conn) *guardConn {
	key, trusted := l.clientKey(c.RemoteAddr())
	counted := l.byAddr != nil && key.IsValid() && !trusted
	now := l.cfg.now()
	l.mu.Lock()
	reason := -1
	var victim *guardConn
	switch {
	case counted && l.byAddr[key] >= l.cfg.perIP:
		reason = refusedPerIP
	case l.open >= l.cfg.capacity:
		if victim = l.unused.popFront(); victim == nil {
			reason = refusedCapacity
		} else {
			l.releaseLocked(victim)
		}
	}
	if reason >= 0 {
		l.refused[reason]++
		l.mu.Unlock()
		l.cfg.metrics.refused[reason].Inc()
		l.refuse(c, reason)
		l.noteShed()
		return nil
	}
	gc := &guardConn{Conn: c, l: l, accepted: now}
	if counted {
		gc.key = key
		l.byAddr[key]++
	}
	l.open++
	l.unused.pushBack(gc)
	if victim != nil {
		l.evicted++
	}
	l.mu.Unlock()
	l.cfg.metrics.open.Inc()
	if victim != nil {
		victim.Conn.Close()
		l.cfg.metrics.evicted.Inc()
		l.noteShed()
	}
	return gc
}

// evict closes the oldest connection that has not sent a byte, if it has
// been open for silent at least; false when there is none.
func (l *guardListener) evict(silent time.Duration) bool {
	now := l.cfg.now()
	l.mu.Lock()
	var victim *guardConn
	if h := l.unused.head; h != nil && now.Sub(h.accepted) >= silent {
		victim = l.unused.popFront()
		l.releaseLocked(victim)
		l.evicted++
	}
	l.mu.Unlock()
	if victim == nil {
		return false
	}
	victim.Conn.Close()
	l.cfg.metrics.evicted.Inc()
	l.noteShed()
	return true
}

// releaseLocked undoes c's accounting, once.
func (l *guardListener) releaseLocked(c *guardConn) {
	if c.released {
		return
	}
	c.released = true
	l.open--
	if c.key.IsValid() {
		if n := l.byAddr[c.key] - 1; n > 0 {
			l.byAddr[c.key] = n
		} else {
			delete(l.byAddr, c.key)
		}
	}
	l.unused.remove(c)
	l.cfg.metrics.open.Dec()
}

// clientKey is what limits.max_conns_per_ip counts (see addrKey); trusted
// reports a peer in proxy.trusted_proxies.
func (l *guardListener) clientKey(a net.Addr) (key netip.Addr, trusted bool) {
	return clientKey(a, l.cfg.trusted)
}

// clientKey is addrKey of a peer's address; the key is invalid for a peer
// that is not a TCP address.
func clientKey(a net.Addr, trusted []netip.Prefix) (key netip.Addr, isTrusted bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Addr{}, false
	}
	return addrKey(ip, trusted)
}

// addrKey is what counts as one client: an IPv4 address, or the /64
// network of an IPv6 address (the smallest block a provider assigns to one
// subscriber). isTrusted reports an address in trusted (proxy.trusted_proxies),
// returned whole.
func addrKey(ip netip.Addr, trusted []netip.Prefix) (key netip.Addr, isTrusted bool) {
	ip = ip.Unmap().WithZone("")
	for _, p := range trusted {
		if p.Contains(ip) {
			return ip, true
		}
	}
	if ip.Is6() {
		ip = netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip, false
}

// refuse ends c: on plain HTTP with a short page, on TLS without a word (an
// answer would need a handshake).
func (l *guardListener) refuse(c net.Conn, reason int) {
	if !l.cfg.tls {
		status := http.StatusTooManyRequests
		if reason == refusedCapacity {
			status = http.StatusServiceUnavailable
		}
		// A new connection's send buffer is empty: the write does not wait;
		// the deadline is a bound should it ever.
		_ = c.SetWriteDeadline(l.cfg.now().Add(100 * time.Millisecond))
		_, _ = c.Write(refusalResponse(status, l.cfg.pages.get().statusPage(status).body, l.cfg.now()))
	}
	c.Close()
}

// refusalResponse is the whole answer to a refused plain connection: the
// error page of status, then the connection closes.
func refusalResponse(status int, page []byte, now time.Time) []byte {
	b := make([]byte, 0, 256+len(page))
	b = fmt.Appendf(b, "HTTP/1.1 %d %s\r\nServer: %s\r\nDate: ", status, http.StatusText(status), serverName)
	b = now.UTC().AppendFormat(b, http.TimeFormat)
	b = fmt.Appendf(b, "\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n", len(page))
	return append(b, page...)
}

// noteAcceptError logs a failed accept, at most once per acceptLogEvery.
func (l *guardListener) noteAcceptError(err error, delay time.Duration) {
	now := l.cfg.now()
	l.mu.Lock()
	l.acceptErrors++
	n := l.acceptErrors
	due := now.Sub(l.acceptLogged) >= acceptLogEvery
	if due {
		l.acceptLogged, l.acceptErrors = now, 0
	}
	l.mu.Unlock()
	if due {
		l.cfg.log.Warn("accepting connections fails; retrying", slog.String("listener", l.cfg.name), slog.Any("err", err),
			slog.Int("failures", n), slog.Duration("retry_in", delay))
	}
}

// noteShed logs refused and evicted connections, at most once per
// shedLogEvery.
func (l *guardListener) noteShed() {
	now := l.cfg.now()
	l.mu.Lock()
	due := now.Sub(l.shedLogged) >= shedLogEvery
	refused, evicted, open := l.refused, l.evicted, l.open
	if due {
		l.shedLogged, l.refused, l.evicted = now, [numRefusals]int{}, 0
	}
	l.mu.Unlock()
	if due {
		l.cfg.log.Warn("connections refused or evicted", slog.String("listener", l.cfg.name),
			slog.Int("refused_per_ip", refused[refusedPerIP]), slog.Int("refused_capacity", refused[refusedCapacity]),
			slog.Int("evicted_unused", evicted), slog.Int("open", open),
			slog.Int("max_conns_per_ip", l.cfg.perIP), slog.Int("capacity", l.cfg.capacity))
	}
}

// retryable reports an accept error that passes: out of descriptors or
// memory, a connection that died in the queue or that a firewall rule
// refused (EPERM), a timeout, and the network errors accept(2) says to treat
// like EAGAIN.
func retryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range retryableErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

var retryableErrnos = []error{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
	syscall.EPROTO, syscall.EPERM, syscall.ENETDOWN, syscall.ENETUNREACH,
	syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.ENOPROTOOPT, syscall.EOPNOTSUPP,
}

func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
