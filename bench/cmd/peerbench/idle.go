package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The idle scenarios hold many keep-alive connections open, each after one
// request, and measure what they cost the server in resident memory: browsers
// keep their connections open between page loads.
const (
	// idleAddrs is how many loopback source addresses the connections come
	// from (127.0.0.2 ...): tollgate caps connections per client address at
	// limits.max_conns_per_ip (1024 by default).
	idleAddrs = 16
	// idleSettle is how long the server is left alone before its RSS is read
	// again, so that work started by the last request has ended and tollgate has parked
	// the connections (proxy/park.go, parkAfter).
	idleSettle = 3 * time.Second
	// idleNginxConns is nginx's worker_connections in peers.go.
	idleNginxConns = 16384
	// idleNoFile is the RLIMIT_NOFILE peerbench asks for before it starts
	// any server (they inherit it): room for 10,000 idle connections in
	// peerbench and in each server, tollgate's listener holding at most a
	// quarter of its limit (proxy/listener.go, descriptorShare).
	idleNoFile = 65536
)

// raiseNoFile raises the process's RLIMIT_NOFILE, soft and hard, to
// idleNoFile when it is lower and the process may (CAP_SYS_RESOURCE);
// otherwise the soft limit to the hard one, and the reason is returned.
func raiseNoFile() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= idleNoFile {
		return err
	}
	want := syscall.Rlimit{Cur: idleNoFile, Max: max(lim.Max, idleNoFile)}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	if err == nil {
		return nil
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	return fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", idleNoFile, err)
}

// idleResult is one server's resident memory (VmRSS) before and with Conns
// idle keep-alive connections.
type idleResult struct {
	Server string `json:"server"`
	Conns  int    `json:"conns"`
	// BeforeRSS: right before the connections open. IdleRSS: with all of
	// them open and idle.
	BeforeRSS int64 `json:"before_rss_bytes"`
	IdleRSS   int64 `json:"idle_rss_bytes"`
	// PerConn is (IdleRSS - BeforeRSS) ÷ Conns.
	PerConn float64 `json:"per_conn_bytes"`
	// Ratio: tollgate's PerConn ÷ this server's (lower is leaner).
	Ratio    *float64 `json:"ratio,omitempty"`
	Problems []string `json:"problems,omitempty"`
}

// idleConns is how many connections the idle scenarios open: want, or fewer
// when the descriptor limit cannot hold them. peerbench holds one descriptor
// per connection, and tollgate's listener at most a quarter of its limit
// (proxy/listener.go, descriptorShare); nginx's worker_connections is a cap
// too. The count is rounded down to a thousand.
func idleConns(want int, raiseErr error) (int, string) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return want, ""
	}
	fit := min(int(lim.Cur)/4-200, int(lim.Cur)-500, idleNginxConns-100) / 1000 * 1000
	if fit >= want {
		return want, ""
	}
	note := fmt.Sprintf("%s connections, not %s: RLIMIT_NOFILE is %d (tollgate's listener holds at most a quarter of it) "+
		"and nginx's worker_connections is %d", groupThousands(int64(fit)), groupThousands(int64(want)), lim.Cur, idleNginxConns)
	if raiseErr != nil {
		note += "; " + raiseErr.Error()
	}
	return fit, note
}

// runIdle measures each server of sc in turn: RSS, then n connections that
// each send one GET /index.html and read the answer, RSS again after
// idleSettle, then all connections close.
func (b *bench) runIdle(ctx context.Context, sc scenario) scenarioResult {
	res := scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusMeasured, Base: sc.Servers[0]}
	n, note := idleConns(b.cfg.IdleConns, b.noFileErr)
	res.Note = note
	for _, name := range sc.Servers {
		r := idleResult{Server: name, Conns: n}
		srv, err := b.server(name)
		if err == nil {
			err = b.measureIdle(ctx, srv, sc.Load == loadH1, &r)
		}
		if err != nil {
			r.Problems = append(r.Problems, err.Error())
		}
		b.logf("%s %-12s %s before, %s with %d idle connections: %s per connection %v", sc.ID, name,
			fmtBytes(r.BeforeRSS), fmtBytes(r.IdleRSS), n, fmtBytes(int64(r.PerConn)), r.Problems)
		res.Idle = append(res.Idle, r)
	}
	for i := range res.Idle[1:] {
		if m := &res.Idle[i+1]; res.Idle[0].PerConn > 0 && m.PerConn > 0 {
			ratio := res.Idle[0].PerConn / m.PerConn
			m.Ratio = &ratio
		}
	}
	return res
}

func (b *bench) measureIdle(ctx context.Context, s *server, overTLS bool, r *idleResult) error {
	addr := s.Addr
	var cfg *tls.Config
	if overTLS {
		if s.TLSAddr == "" || s.tls == nil {
			return fmt.Errorf("%s has no HTTPS listener", s.Name)
		}
		addr = s.TLSAddr
		cfg = &tls.Config{RootCAs: s.tls.Roots, ServerName: hostTLS, NextProtos: []string{"http/1.1"}}
	}
	host := hostStatic
	if overTLS {
		host = hostTLS
	}
	req := []byte("GET /index.html HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	var err error
	if r.BeforeRSS, err = rssBytes(s.proc.pid()); err != nil {
		return err
	}
	conns := make([]net.Conn, r.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	// A few dialers at once: the server's accept loop, not the client, is
	// what should be the limit.
	const dialers = 8
	errs := make([]error, dialers)
	var wg sync.WaitGroup
	for w := range dialers {
		wg.Go(func() {
			for i := w; i < len(conns) && errs[w] == nil; i += dialers {
				conns[i], errs[w] = openIdle(ctx, addr, i%idleAddrs, cfg, req)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(idleSettle):
	}
	if r.IdleRSS, err = rssBytes(s.proc.pid()); err != nil {
		return err
	}
	r.PerConn = float64(r.IdleRSS-r.BeforeRSS) / float64(r.Conns)
	return nil
}

// openIdle connects from 127.0.0.(2+from), over TLS when cfg is set, sends
// req and reads one whole 200 answer, leaving the connection open.
func openIdle(ctx context.Context, addr string, from int, cfg *tls.Config, req []byte) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+from))}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET /index.html: status %d", resp.StatusCode)
		}
		if err == nil && resp.Close {
			err = errors.New("GET /index.html: the server closes the connection")
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// writeIdleTable writes the RSS figures of an idle scenario.
func writeIdleTable(w io.Writer, sc scenarioResult, md bool) {
	head := []string{"server", "RSS before", "RSS with the connections", "per connection", "tollgate ÷ server (lower is leaner)", "valid"}
	var rows [][]string
	for i, m := range sc.Idle {
		ratio := "—"
		if i > 0 {
			ratio = fmtRatio(m.Ratio)
		}
		valid := "yes"
		if len(m.Problems) > 0 {
			valid = "INVALID"
		}
		rows = append(rows, []string{m.Server, fmtBytes(m.BeforeRSS), fmtBytes(m.IdleRSS),
			fmt.Sprintf("%.1f KB", m.PerConn/1000), ratio, valid})
	}
	writeGrid(w, head, rows, md)
	notes := []string{fmt.Sprintf("each connection sent one GET /index.html from one of %d loopback addresses and stays open; "+
		"RSS read %s after the last one", idleAddrs, idleSettle)}
	if sc.Note != "" {
		notes = append(notes, sc.Note)
	}
	if md {
		fmt.Fprintf(w, "\n%s\n", strings.Join(notes, "; "))
	} else {
		fmt.Fprintln(w, strings.Join(notes, "; "))
	}
}
