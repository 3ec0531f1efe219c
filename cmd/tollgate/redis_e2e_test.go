package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate-edge/tollgate/internal/redistest"
)

// load keeps 4 clients fetching host's "/" until stop is closed; ok counts
// complete 200 answers.
type load struct {
	d      countingDialer
	ok     atomic.Int64
	failed atomic.Int64 // errors and non-200 answers
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startLoad(in *instance, host string) *load {
	l := &load{stop: make(chan struct{})}
	return l.run(l.d.client(), "http://"+in.http+"/", host)
}

// startLoadTLS is startLoad over HTTPS (HTTP/1.1) to the instance's TLS
// listener, trusting roots; the bytes counted are the plaintext ones the
// client reads, which is what tollgate meters.
func startLoadTLS(in *instance, host string, roots *x509.CertPool) *load {
	l := &load{stop: make(chan struct{})}
	client := &http.Client{Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, in.https)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: host, NextProtos: []string{"http/1.1"}})
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return &countedConn{Conn: tc, n: &l.d.n}, nil
		},
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}}
	return l.run(client, "https://"+host+"/", host)
}

func (l *load) run(client *http.Client, url, host string) *load {
	for range 4 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					client.CloseIdleConnections()
					return
				default:
				}
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = host
				resp, err := client.Do(req)
				if err != nil {
					select {
					case <-l.stop: // shutting down: not a visitor error
					default:
						l.failed.Add(1)
					}
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == 200 {
					l.ok.Add(1)
				} else {
					l.failed.Add(1)
				}
			}
		}()
	}
	return l
}

func (l *load) finish() (bytes, requests int64) {
	close(l.stop)
	l.wg.Wait()
	return l.d.n.Load(), l.ok.Load()
}

func (in *instance) usageTotals(t *testing.T, org string) (egress, requests int64) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+in.admin+"/v1/usage?org="+org+"&step=month", nil)
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
	return u.Totals.EgressBytes, u.Totals.Requests
}

// TestRedisOutagesLoseNothing: usage goes to Redis; Redis is killed during
// load and restarted, then killed again before a SIGTERM. After each
// recovery, the usage in Redis equals what the clients received.
func TestRedisOutagesLoseNothing(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	siteDir := filepath.Join(dir, "site")
	os.MkdirAll(siteDir, 0o755)
	os.WriteFile(filepath.Join(siteDir, "index.html"), []byte(strings.Repeat("metered ", 300)), 0o644)
	storeExtra := `redis = "redis://` + rs.Addr() + `/0"`
	in := startTollgateWith(t, dir, storeExtra)
	in.registerSite(t, siteDir)

	// 1. Redis dies during load, comes back: totals converge exactly.
	l := startLoad(in, "www.acme.example")
	waitFor(t, func() bool { return l.ok.Load() >= 100 })
	rs.Stop()
	n := l.ok.Load()
	waitFor(t, func() bool { return l.ok.Load() >= n+200 }) // served while Redis is down
	rs.Restart()
	waitFor(t, func() bool { return l.ok.Load() >= n+300 })
	wantBytes, wantReqs := l.finish()
	waitFor(t, func() bool {
		b, r := in.usageTotals(t, "acme")
		return b == wantBytes && r == wantReqs
	})

	// 2. Redis dies, then tollgate gets SIGTERM: usage is spooled to bbolt
	// and reaches Redis after the next start.
	rs.Stop()
	l = startLoad(in, "www.acme.example")
	waitFor(t, func() bool { return l.ok.Load() >= 100 })
	in.stop(t)
	moreBytes, moreReqs := l.finish()
	if !strings.Contains(in.stderr.String(), "spooled") {
		t.Fatalf("no spooling logged at shutdown:\n%s", in.stderr)
	}
	rs.Restart()
	in = startTollgateWith(t, dir, storeExtra)
	defer in.stop(t)
	waitFor(t, func() bool {
		b, r := in.usageTotals(t, "acme")
		return b == wantBytes+moreBytes && r == wantReqs+moreReqs
	})
	t.Logf("exact after two outages: %d requests, %d bytes", wantReqs+moreReqs, wantBytes+moreBytes)
}
