package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// countingDialer counts every byte the clients read from tollgate.
type countingDialer struct{ n atomic.Int64 }

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (d *countingDialer) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err != nil {
				return nil, err
			}
			return &countedConn{Conn: c, n: &d.n}, nil
		},
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}}
}

// TestUsageSurvivesSIGTERMUnderLoad: clients load a site, tollgate gets
// SIGTERM in the middle, and after a restart the usage API reports exactly
// the bytes and requests the clients received.
func TestUsageSurvivesSIGTERMUnderLoad(t *testing.T) {
	dir := t.TempDir()
	siteDir := filepath.Join(dir, "site")
	os.MkdirAll(siteDir, 0o755)
	os.WriteFile(filepath.Join(siteDir, "index.html"), []byte(strings.Repeat("tollgate ", 500)), 0o644)
	in := startTollgate(t, dir)
	in.registerSite(t, siteDir)

	l := startLoad(in, "www.acme.example")
	waitFor(t, func() bool { return l.ok.Load() >= 200 })
	in.stop(t)
	received, served := l.finish()

	in = startTollgate(t, dir)
	defer in.stop(t)
	egress, requests := in.usageTotals(t, "acme")
	if egress != received || requests != served {
		t.Fatalf("metered %d bytes in %d requests; clients received %d bytes in %d requests", egress, requests, received, served)
	}
	t.Logf("%d requests, %d bytes metered exactly across SIGTERM", served, received)
}
