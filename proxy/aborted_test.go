//go:build linux

package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/store"
)

// TestAbortedDownloadsChargeWhatWasAcknowledged: clients that read 100 KiB
// of a 16 MiB file and then reset the connection are charged no more than
// their kernels acknowledged (what they read plus their receive buffer),
// not the megabytes tollgate's kernel had accepted; complete downloads on
// the same node stay exact. Plain HTTP and TLS.
func TestAbortedDownloadsChargeWhatWasAcknowledged(t *testing.T) {
	ctx := context.Background()
	sink := store.NewBoltUsage(storetest.Open(t))
	m, err := meter.New(meter.Config{}, meter.Options{Sink: sink, Node: "t", Metrics: prometheus.NewRegistry()})
	must(t, err)
	h := newHarnessUsage(t, Config{}, Limits{}, m)
	const size = 16 << 20
	must(t, os.WriteFile(filepath.Join(h.root, "huge.bin"), make([]byte, size), 0o644))
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.Serve(plainLn)
	c, err := certtest.New(time.Hour, "www.example")
	must(t, err)
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(tlsLn, &tls.Config{Certificates: []tls.Certificate{c.TLS}, NextProtos: []string{"http/1.1"}})

	const rcvbuf = 32 << 10
	dial := func(addr string, useTLS bool) (net.Conn, *net.TCPConn) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			if err != nil {
				return err
			}
			return serr
		}}
		raw, err := d.Dial("tcp", addr)
		must(t, err)
		tc := raw.(*net.TCPConn)
		if !useTLS {
			return raw, tc
		}
		conn := tls.Client(raw, &tls.Config{RootCAs: c.Pool(), ServerName: "www.example", NextProtos: []string{"http/1.1"}})
		must(t, conn.Handshake())
		return conn, tc
	}
	var read int64 // what the client applications read
	abort := func(addr string, useTLS bool) {
		conn, tc := dial(addr, useTLS)
		io.WriteString(conn, "GET /huge.bin HTTP/1.1\r\nHost: www.example\r\n\r\n")
		n, _ := io.CopyN(io.Discard, conn, 100<<10)
		read += n
		tc.SetLinger(0) // a reset, as a browser closing a tab with unread data
		conn.Close()
	}
	complete := func(addr string, useTLS bool) {
		conn, _ := dial(addr, useTLS)
		defer conn.Close()
		io.WriteString(conn, "GET /4k.bin HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\n\r\n")
		n, _ := io.Copy(io.Discard, conn)
		read += n
	}
	const aborted = 8
	for range aborted {
		abort(plainLn.Addr().String(), false)
		abort(tlsLn.Addr().String(), true)
		complete(plainLn.Addr().String(), false)
	}

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	must(t, h.proxy.Shutdown(sctx))
	must(t, m.Close(ctx))
	now := time.Now()
	pts, err := sink.Hourly(ctx, "acme", now.Add(-2*time.Hour), now.Add(time.Hour))
	must(t, err)
	_, v, _ := meter.Aggregate(pts, meter.StepMonth)
	// The peer acknowledged at most what it read plus a receive buffer
	// (Linux doubles SO_RCVBUF) per aborted connection, plus its TLS share.
	bound := read + 2*aborted*(2*2*rcvbuf+16<<10)
	t.Logf("clients read %d bytes; charged %d (bound %d; the file is %d bytes, %d aborted downloads)", read, v.EgressBytes, bound, size, 2*aborted)
	if v.EgressBytes < read {
		t.Errorf("charged %d bytes, less than the %d the clients read", v.EgressBytes, read)
	}
	if v.EgressBytes > bound {
		t.Errorf("charged %d bytes for downloads the clients cut off after %d bytes read (bound %d)", v.EgressBytes, read, bound)
	}
}
