package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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
	for _, s := range [][]string{
		{"org", "create", "acme", "--plan", "free"},
		{"site", "create", "acme", "www", "--dir", siteDir},
		{"domain", "add", "www", "www.acme.example"},
	} {
		if out, code := in.cli(t, s...); code != 0 {
			t.Fatalf("%v: %s", s, out)
		}
	}

	var d countingDialer
	client := d.client()
	var ok atomic.Int64
	var wg sync.WaitGroup
	stopLoad := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+in.http+"/", nil)
				req.Host = "www.acme.example"
				resp, err := client.Do(req)
				if err != nil {
					continue // the listener is closing: not served, not metered
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == 200 {
					ok.Add(1)
				}
			}
		}()
	}
	waitFor(t, func() bool { return ok.Load() >= 200 })
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-in.exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, in.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	close(stopLoad)
	wg.Wait()
	client.CloseIdleConnections()
	received, served := d.n.Load(), ok.Load()

	in = startTollgate(t, dir)
	defer in.stop(t)
	req, _ := http.NewRequest("GET", "http://"+in.admin+"/v1/usage?org=acme&step=month", nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var u struct {
		Totals struct {
			EgressBytes int64 `json:"egress_bytes"`
			Requests    int64 `json:"requests"`
		} `json:"totals"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
		t.Fatal(err)
	}
	if u.Totals.EgressBytes != received || u.Totals.Requests != served {
		t.Fatalf("metered %d bytes in %d requests; clients received %d bytes in %d requests", u.Totals.EgressBytes, u.Totals.Requests, received, served)
	}
	t.Logf("%d requests, %d bytes metered exactly across SIGTERM", served, received)
}
