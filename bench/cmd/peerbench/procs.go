package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tollgate-edge/tollgate/internal/proctest"
)

// cpuPlan says which cores the server under test, wrk and the upstream run
// on. Each field is a taskset prefix; empty means unpinned.
type cpuPlan struct {
	Server, Load, Upstream []string
	Description            string
}

// planCPUs pins the server to CPU 0 and wrk to CPU 1 when there are two or
// more cores; the upstream gets CPU 2 when there is one, else shares CPU 1
// with wrk (the load side, never the server's core). On one core, or without
// taskset, nothing is pinned and everything shares the core.
func planCPUs(ncpu int) cpuPlan {
	if _, err := exec.LookPath("taskset"); err != nil && ncpu >= 2 {
		return cpuPlan{Description: "unpinned: taskset not found; server, wrk and upstream share all cores"}
	}
	pin := func(cpu int) []string { return []string{"taskset", "-c", strconv.Itoa(cpu)} }
	switch {
	case ncpu >= 3:
		return cpuPlan{Server: pin(0), Load: pin(1), Upstream: pin(2),
			Description: "server on CPU 0, wrk on CPU 1, upstream on CPU 2 (taskset)"}
	case ncpu == 2:
		return cpuPlan{Server: pin(0), Load: pin(1), Upstream: pin(1),
			Description: "server on CPU 0; wrk and the proxy upstream share CPU 1 (taskset)"}
	default:
		return cpuPlan{Description: "unpinned (1 core): server, wrk and upstream share the core; ratios are indicative only"}
	}
}

// proc is one started child process, stopped by its PID.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// procs remembers every child so that all are stopped at the end, on failure
// and on interrupt. It is safe for concurrent use.
type procs struct {
	mu  sync.Mutex
	all []*proc
}

// start runs argv with stdout and stderr appended to logPath. The child gets
// SIGKILL if peerbench dies without cleaning up (Pdeathsig).
func (ps *procs) start(name string, argv []string, env []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: starting %s: %w", name, argv[0], err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	return p, nil
}

// stopAll stops every child still running, newest first.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := slices.Clone(ps.all)
	ps.all = nil
	ps.mu.Unlock()
	slices.Reverse(all)
	for _, p := range all {
		p.stop()
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the PID, then SIGKILL after five seconds.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail is the end of the process's log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const keep = 1500
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return strings.TrimSpace(string(b))
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for len(ports) < n {
		p, err := proctest.FreePort()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// startAttempts is how often a server start is tried with fresh ports.
const startAttempts = 3

// retryStart calls start until it succeeds or startAttempts are used: a port
// taken between proctest.FreePort and the server's bind fails one attempt only.
func retryStart[T any](ctx context.Context, start func(attempt int) (T, error)) (T, error) {
	var errs []error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		v, err := start(attempt)
		if err == nil {
			return v, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
		if ctx.Err() != nil {
			break
		}
	}
	var zero T
	return zero, errors.Join(errs...)
}

// plainClient never asks for compression, so sizes are identity bytes, and
// keeps connections alive between polls and probes.
var plainClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4},
}

// waitReady polls GET url (with Host host) until it answers 200, the process
// exits, or timeout passes.
func waitReady(ctx context.Context, p *proc, url, host string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Host = host
		resp, err := plainClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", p.name, p.waitErr, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s after %s: %v; log:\n%s", p.name, url, timeout, last, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture peerbench runs on).
const userHZ = 100

// cpuTime is the CPU time (user + system) process pid has used so far, all
// its threads, from /proc/PID/stat, to 1/userHZ s.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// "pid (comm) state ppid ...": comm may hold spaces, so split after
	// the last ')'; utime and stime are fields 14 and 15 of the line.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// rssBytes reads VmRSS from /proc/PID/status.
func rssBytes(pid int) (int64, error) { return statusBytes(pid, "VmRSS") }

// statusBytes reads a size field of /proc/PID/status (VmRSS, VmHWM: "N kB").
func statusBytes(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("%s: unexpected %q", field, rest)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}
