package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The resource tests of the public listener against the built binary: clients
// that run it out of file descriptors, and 20,000 idle connections. They need
// Linux (prlimit, /proc).

// TestOutOfDescriptorsKeepsServing: with its descriptor limit pulled down to
// 1024 while it runs, tollgate is run out of descriptors (EMFILE) twice. It
// used to stop serving at the first EMFILE ("listener failed: accept tcp:
// too many open files"); now it stays up, counts the failed accepts and logs
// them at most once a second:
//
//   - by 3,000 connections that never send a byte: the public listener
//     closes the oldest of them to take new ones (and keeps a descriptor
//     spare), so once it has worked through them normal clients are served
//     within 100 ms, and the admin listener answers;
//   - by 1,100 connections that each sent half a request: nothing can be
//     evicted, both listeners retry with a back-off, and a client waiting
//     meanwhile, and the admin request, are served once some of them close.
//
// After each, service is as before. The page is checked against its file on
// (almost) every request (sites.dir_revalidate 1ms): it is served from the
// cache while descriptors are short, after one stat of the unchanged file,
// or none when the site's directory cannot be opened. (Each check used to
// read the file again, for want of its sub-second mtime, and a request that
// found no descriptor for it was answered 500.)
func TestOutOfDescriptorsKeepsServing(t *testing.T) {
	const limit = 1024
	in := startTollgateConf(t, t.TempDir(), "", "[limits]\nread_timeout = \"5m\"\n[sites]\ndir_revalidate = \"1ms\"\n")
	in.registerSite(t, in.siteDir(t, "<h1>still here</h1>"))
	in.normalClients(t, "before", 1) // also puts index.html in the cache
	pid := in.cmd.Process.Pid

	start := time.Now()
	setFileLimit(t, pid, limit)
	idle := openFlood(t, in.http, 3000, 200, "")
	// tollgate works through the backlog, closing a connection silent for
	// a second for each one it takes; then a client takes one at once.
	waitFor(t, func() bool {
		in.requireAlive(t)
		code, _, err := timedGet(in.http, "www.acme.example")
		return err == nil && code == 200
	})
	in.normalClients(t, "out of descriptors, idle connections", 20)
	if err := healthz(in.admin); err != nil {
		t.Fatalf("admin /healthz with the descriptors taken by idle connections: %v", err)
	}
	idle.close()
	waitFor(t, func() bool { return in.metric(t, "tollgate_proxy_connections") == 0 })
	in.normalClients(t, "after the idle connections", 5)
	failures, evicted := in.metric(t, "tollgate_proxy_accept_errors_total"), in.metric(t, "tollgate_proxy_connections_evicted_total")
	if failures == 0 || evicted == 0 {
		t.Errorf("tollgate_proxy_accept_errors_total = %v, tollgate_proxy_connections_evicted_total = %v; want both > 0", failures, evicted)
	}
	t.Logf("idle connections: %v failed accepts, %v evicted", failures, evicted)

	busy := openFlood(t, in.http, 1100, 200, "GET / HTTP/1.1\r\nHost: www.acme.example\r\n")
	// Once tollgate has taken what it can of them, every descriptor is
	// taken, and stays so.
	waitFor(t, func() bool {
		in.requireAlive(t)
		// Other parts of tollgate take and return descriptors too
		// (walking site directories): more connections fill what they
		// left.
		if free := limit - openFiles(t, pid); free > 0 {
			busy.open(t, free)
			return false
		}
		return true
	})
	health := make(chan error, 1)
	go func() { health <- healthz(in.admin) }()
	waitFor(t, func() bool {
		in.requireAlive(t)
		return strings.Contains(in.stderr.String(), "http: Accept error") // net/http retrying
	})
	waiting := make(chan error, 1)
	waitingSince := time.Now()
	go func() {
		code, _, err := timedGet(in.http, "www.acme.example")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		waiting <- err
	}()
	// It waits behind the rest of the flood: no descriptor, nothing to
	// evict (every connection sent something).
	select {
	case err := <-waiting:
		t.Fatalf("a client was served with every descriptor taken (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	busy.closeSome(200)
	freed := time.Now()
	if err := <-waiting; err != nil {
		t.Fatalf("client waiting while the descriptors were taken: %v", err)
	}
	t.Logf("a client that waited for a descriptor was served %v after it connected, %v after descriptors were freed",
		time.Since(waitingSince).Round(time.Millisecond), time.Since(freed).Round(time.Millisecond))
	if err := <-health; err != nil {
		t.Fatalf("admin /healthz waiting for a descriptor: %v", err)
	}
	busy.close()
	waitFor(t, func() bool { return in.metric(t, "tollgate_proxy_connections") == 0 })
	in.normalClients(t, "after the half requests", 5)
	if f := in.metric(t, "tollgate_proxy_accept_errors_total"); f <= failures {
		t.Errorf("tollgate_proxy_accept_errors_total = %v after the half requests, %v before", f, failures)
	}

	logged := strings.Count(in.stderr.String(), "accepting connections fails; retrying")
	if logged == 0 || !strings.Contains(in.stderr.String(), "too many open files") {
		t.Errorf("no log line for the failed accepts:\n%s", in.stderr)
	}
	if most := int(time.Since(start)/time.Second) + 1; logged > most {
		t.Errorf("%d log lines for failed accepts in %v; want at most one a second", logged, time.Since(start))
	}
	t.Logf("%d log lines for failed accepts in %v", logged, time.Since(start).Round(time.Millisecond))
	in.stop(t)
}

// TestTwentyThousandIdleConnections: 20,000 connections that never send a
// byte, from 100 loopback addresses. tollgate's listener holds as many as its
// limit allows (tollgate_proxy_connections_limit: at most a quarter of its
// file-descriptor limit) and for each one past it closes the oldest idle one,
// so it never runs out of descriptors. Meanwhile the admin listener answers,
// normal clients are served within 100 ms, and the process grows by a
// bounded amount per connection held. When they close, the process serves as
// before.
func TestTwentyThousandIdleConnections(t *testing.T) {
	const n = 20000
	// Where it may, the test process raises its descriptor limit, and the
	// binary inherits it: then its listener holds all 20,000. Where it
	// may not (a 20,000 hard limit), the listener holds 5,000.
	raiseFileLimit(t, 100000)
	in := startTollgateConf(t, t.TempDir(), "", "[limits]\nread_timeout = \"5m\"\n")
	in.registerSite(t, in.siteDir(t, "<h1>still here</h1>"))
	in.normalClients(t, "before", 5)
	before := in.rss(t)
	held := n // what a listener without a limit would have to hold
	if limit := int(in.metric(t, "tollgate_proxy_connections_limit")); limit > 0 {
		held = min(n, limit)
	}

	start := time.Now()
	flood := openFlood(t, in.http, n, 200, "")
	if flood.failed != 0 {
		t.Fatalf("%d of %d idle connections failed", flood.failed, n)
	}
	waitFor(t, func() bool {
		in.requireAlive(t)
		return in.metric(t, "tollgate_proxy_connections") == float64(held) &&
			in.metric(t, "tollgate_proxy_connections_evicted_total") == float64(n-held)
	})
	t.Logf("%d idle connections opened in %v: %d held, %d evicted", n, time.Since(start).Round(time.Millisecond), held, n-held)
	rss := in.rss(t)
	perConn := (rss - before) / int64(held)
	t.Logf("RSS %d MiB before, %d MiB holding %d idle connections: %d KiB each", before>>20, rss>>20, held, perConn>>10)
	if perConn > 32<<10 {
		t.Errorf("an idle connection costs %d KiB of RSS; want at most 32 KiB", perConn>>10)
	}

	healthStart := time.Now()
	if err := healthz(in.admin); err != nil {
		t.Fatalf("admin /healthz during the flood: %v", err)
	}
	t.Logf("admin /healthz answered in %v", time.Since(healthStart).Round(time.Microsecond))
	in.normalClients(t, "during the flood", 20)

	flood.close()
	waitFor(t, func() bool { return in.metric(t, "tollgate_proxy_connections") == 0 })
	in.normalClients(t, "after", 5)
	for _, m := range []string{"tollgate_proxy_accept_errors_total", "tollgate_proxy_connections_refused_total"} {
		if v := in.metric(t, m); v != 0 {
			t.Errorf("%s = %v; want 0 (the listener kept within its descriptors)", m, v)
		}
	}
	in.stop(t)
}

// normalClients makes n requests, each on a new connection from 127.0.0.1,
// and requires every one to be answered 200 within 100 ms of dialing.
func (in *instance) normalClients(t *testing.T, when string, n int) {
	t.Helper()
	var worst, total time.Duration
	for range n {
		code, d, err := timedGet(in.http, "www.acme.example")
		if err != nil || code != 200 {
			in.requireAlive(t)
			t.Fatalf("%s: normal client: %d %v", when, code, err)
		}
		worst, total = max(worst, d), total+d
	}
	t.Logf("%s: %d normal clients, mean %v, slowest %v", when, n, (total / time.Duration(n)).Round(time.Microsecond), worst.Round(time.Microsecond))
	if worst > 100*time.Millisecond {
		t.Errorf("%s: a normal client took %v; want at most 100ms", when, worst)
	}
}

// requireAlive fails the test if the process has exited.
func (in *instance) requireAlive(t *testing.T) {
	t.Helper()
	select {
	case err := <-in.exited:
		in.exited <- err
		t.Fatalf("tollgate exited: %v\n%s", err, in.stderr)
	default:
	}
}

// healthz asks the admin listener for /healthz on a new connection, waiting
// up to 15s.
func healthz(admin string) error {
	c := http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + admin + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// openFiles is the number of descriptors process pid has open.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// timedGet asks for host's / on a new connection from 127.0.0.1 and returns
// the status and the time from dialing to the end of the answer.
func timedGet(addr, host string) (int, time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
		return 0, 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, 0, err
	}
	return resp.StatusCode, time.Since(start), nil
}

// flood is a crowd of connections from loopback addresses that send first
// (or nothing) and then wait. Those the server closes are closed on this
// side too, so that the test's descriptors go as far as the server's.
type flood struct {
	addr    string
	perAddr int    // connections from each source address
	first   string // sent on connecting
	mu      sync.Mutex
	conns   map[net.Conn]bool
	opened  int // so far, open or not: the next one's index
	failed  int
}

// openFlood opens n connections to addr from 127.0.0.2 and up, perAddr from
// each address, sending first on each; they are closed by close or at
// cleanup.
func openFlood(t *testing.T, addr string, n, perAddr int, first string) *flood {
	t.Helper()
	f := &flood{addr: addr, perAddr: perAddr, first: first, conns: map[net.Conn]bool{}}
	t.Cleanup(f.close)
	f.open(t, n)
	return f
}

// open opens n more connections.
func (f *flood) open(t *testing.T, n int) {
	t.Helper()
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(n, 8) {
		wg.Go(func() {
			for i := range next {
				k := 2 + i/f.perAddr
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(k>>8), byte(k))}, Timeout: 10 * time.Second}
				c, err := d.Dial("tcp", f.addr)
				if err == nil && f.first != "" {
					if _, err = io.WriteString(c, f.first); err != nil {
						c.Close()
					}
				}
				f.mu.Lock()
				if err != nil {
					f.failed++
					f.mu.Unlock()
					continue
				}
				f.conns[c] = true
				f.mu.Unlock()
				go func() {
					io.Copy(io.Discard, c) // until the server closes it
					f.mu.Lock()
					delete(f.conns, c)
					f.mu.Unlock()
					c.Close()
				}()
			}
		})
	}
	for range n {
		next <- f.opened
		f.opened++
	}
	close(next)
	wg.Wait()
}

// closeSome closes n of the connections.
func (f *flood) closeSome(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		if n == 0 {
			return
		}
		c.Close()
		delete(f.conns, c)
		n--
	}
}

func (f *flood) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// setFileLimit sets the RLIMIT_NOFILE of process pid (soft and hard).
func setFileLimit(t *testing.T, pid int, n uint64) {
	t.Helper()
	lim := syscall.Rlimit{Cur: n, Max: n}
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_NOFILE,
		uintptr(unsafe.Pointer(&lim)), 0, 0, 0); errno != 0 {
		t.Fatalf("prlimit(%d, RLIMIT_NOFILE, %d): %v", pid, n, errno)
	}
}

// raiseFileLimit raises this process's soft and hard RLIMIT_NOFILE towards n
// for the test, as far as it may; processes started meanwhile inherit it.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= n {
		return
	}
	raised := syscall.Rlimit{Cur: n, Max: max(n, old.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		raised = syscall.Rlimit{Cur: old.Max, Max: old.Max} // no right to raise the hard limit
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("RLIMIT_NOFILE %d (hard %d)", raised.Cur, raised.Max)
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}
