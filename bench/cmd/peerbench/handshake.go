package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"
)

// handshakeSubcommand makes peerbench the load generator of tls-handshakes:
// a separate process, so that it runs pinned on the load core like wrk and
// h2load.
const handshakeSubcommand = "handshake-client"

// handshakeLoad is one run of the handshake client against one server.
type handshakeLoad struct {
	Addr     string // the HTTPS listener, host:port
	Path     string // the one small GET per connection
	LeafFile string // DER of the leaf the check verified
	Workers  int
	Duration time.Duration
}

func (l handshakeLoad) args() []string {
	return []string{handshakeSubcommand, "-addr", l.Addr, "-sni", hostTLS, "-path", l.Path, "-leaf", l.LeafFile,
		"-c", strconv.Itoa(l.Workers), "-d", l.Duration.String()}
}

// handshakeReport is what the handshake client prints, as JSON.
type handshakeReport struct {
	// Handshakes is how many connections completed handshake, request and
	// answer within the duration; Failed how many failed (in flight at the
	// end is neither).
	Handshakes int64         `json:"handshakes"`
	Failed     int64         `json:"failed"`
	FirstError string        `json:"first_error,omitempty"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	// Latency of one connection, dial to the answer's last byte.
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	TLS  tlsInfo       `json:"tls"`
}

// runHandshakes runs the handshake client (pinned by pin) and converts its
// report: a request is a completed handshake.
func runHandshakes(ctx context.Context, pin []string, l handshakeLoad) (runResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return runResult{}, err
	}
	argv := slices.Concat(pin, []string{exe}, l.args())
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return runResult{}, fmt.Errorf("handshake client %s: %w: %s", l.Addr, err, bytes.TrimSpace(errb.Bytes()))
	}
	var h handshakeReport
	if err := json.Unmarshal(out.Bytes(), &h); err != nil {
		return runResult{}, fmt.Errorf("handshake client %s: %w: %q", l.Addr, err, out.String())
	}
	r := runResult{Requests: h.Handshakes, Elapsed: h.Elapsed, LatencyAvg: h.Mean, P50: h.P50, P99: h.P99,
		Failed: h.Failed, FirstError: h.FirstError}
	if h.Elapsed > 0 {
		r.ReqPerSec = float64(h.Handshakes) / h.Elapsed.Seconds()
	}
	if h.TLS != (tlsInfo{}) {
		r.TLS = &h.TLS
	}
	return r, nil
}

// handshakeClient is the subcommand: -c workers, each opening one new TCP
// connection after another for -d, with a full TLS handshake (no session
// cache, so never resumed; X25519 only, as h2load and the OpenSSL and older
// Go servers negotiate, so no post-quantum hybrid runs on one side only),
// then one GET with "Connection: close", reading the whole answer. The
// server's certificate is compared byte for byte with -leaf (verified by
// peerbench's check) instead of verifying the chain again, which would
// spend the load core on two more signature checks per connection.
func handshakeClient(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(handshakeSubcommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "HTTPS listener, host:port")
	sni := fs.String("sni", hostTLS, "server name (SNI and Host)")
	path := fs.String("path", "/index.html", "path of the GET sent on each connection")
	leafFile := fs.String("leaf", "", "file with the DER of the expected leaf certificate")
	workers := fs.Int("c", 64, "concurrent connections")
	dur := fs.Duration("d", 5*time.Second, "duration")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	leaf, err := os.ReadFile(*leafFile)
	if err != nil || *addr == "" || *workers < 1 || *dur <= 0 {
		fmt.Fprintf(stderr, "%s: need -addr, -leaf (%v), -c ≥ 1 and -d > 0\n", handshakeSubcommand, err)
		return 2
	}
	// The load core is the scarce one here (a client handshake costs about
	// what a server one does): trade memory for less garbage collection.
	debug.SetGCPercent(800)
	rep := measureHandshakes(*addr, *sni, *path, leaf, *workers, *dur)
	if err := json.NewEncoder(stdout).Encode(rep); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

var errLeaf = errors.New("the server's certificate is not the one the check verified")

func measureHandshakes(addr, sni, path string, leaf []byte, workers int, d time.Duration) handshakeReport {
	cfg := &tls.Config{
		ServerName:         sni,
		InsecureSkipVerify: true, // replaced by the comparison with the verified leaf
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf) {
				return errLeaf
			}
			return nil
		},
		CurvePreferences: []tls.CurveID{tls.X25519},
		NextProtos:       []string{"http/1.1"},
	}
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + sni + "\r\nConnection: close\r\n\r\n")
	start := time.Now()
	end := start.Add(d)
	var (
		mu       sync.Mutex
		rep      handshakeReport
		lat      []float64
		wg       sync.WaitGroup
		firstErr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			var failed int64
			var state tls.ConnectionState
			var err1 error
			for time.Now().Before(end) {
				t0 := time.Now()
				cs, err := oneHandshake(addr, cfg, req, end.Add(5*time.Second))
				done := time.Now()
				switch {
				case err != nil && done.After(end):
					// in flight at the end: neither counted nor failed
				case err != nil:
					failed++
					if err1 == nil {
						err1 = err
					}
				case !done.After(end):
					mine = append(mine, float64(done.Sub(t0)))
					if state.Version == 0 {
						state = cs
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			rep.Failed += failed
			if firstErr == nil {
				firstErr = err1
			}
			if rep.TLS == (tlsInfo{}) && state.Version != 0 {
				rep.TLS = tlsInfo{Protocol: tlsVersionName(state.Version), Cipher: tls.CipherSuiteName(state.CipherSuite),
					KeyExchange: state.CurveID.String(), ALPN: state.NegotiatedProtocol}
			}
		}()
	}
	wg.Wait()
	rep.Elapsed = d
	rep.Handshakes = int64(len(lat))
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
	}
	if len(lat) > 0 {
		sum := 0.0
		for _, v := range lat {
			sum += v
		}
		rep.Mean = time.Duration(sum / float64(len(lat)))
		rep.P50 = time.Duration(percentile(lat, 0.5))
		rep.P99 = time.Duration(percentile(lat, 0.99))
	}
	return rep
}

// oneHandshake opens one connection, completes a full handshake, sends req
// and reads the answer to its end; any status but 200 is an error.
func oneHandshake(addr string, cfg *tls.Config, req []byte, deadline time.Time) (tls.ConnectionState, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	c := tls.Client(raw, cfg)
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return tls.ConnectionState{}, err
	}
	if err := c.Handshake(); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("handshake: %w", err)
	}
	if _, err := c.Write(req); err != nil {
		return tls.ConnectionState{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return tls.ConnectionState{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return tls.ConnectionState{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	return c.ConnectionState(), nil
}

// tlsVersionName spells versions as h2load does ("TLSv1.3").
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	}
	return tls.VersionName(v)
}
