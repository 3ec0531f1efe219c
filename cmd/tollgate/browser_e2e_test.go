package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/pebbletest"
)

// browserSubresources is how many files the test page loads besides itself.
const browserSubresources = 20

// browserTimeout bounds Chromium's run (a cold start and the page load take
// a few seconds here).
const browserTimeout = 60 * time.Second

// TestBrowserH2OneConnection loads a page with 20 sub-resources (stylesheets,
// scripts and images) in headless Chromium from the built binary's HTTPS
// listener, with a certificate from Pebble that Chromium trusts through an
// NSS database in a test HOME (no --ignore-certificate-errors). Chromium's
// net log must show what a visitor's browser does: one TCP connection to
// tollgate, one TLS session that negotiated h2, one HTTP/2 session that
// carried all 21 requests, every answer a 200.
//
// Chromium (Debian chromium) and certutil (libnss3-tools) are declared
// dependencies: without them the test fails and names `make chromium`. Under
// -short it is skipped.
func TestBrowserH2OneConnection(t *testing.T) {
	chromium, certutil := browserTools(t)
	const host = "browser.test"
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := startTollgateFull(t, dir, httpsServer, "", acmeSection(ca, ""))
	defer in.stop(t)
	if out, code := in.cli(t, "plan", "put", "big"); code != 0 {
		t.Fatal(out)
	}
	site := in.siteDir(t, "")
	paths := writeBrowserPage(t, site)
	in.addSite(t, "web", "big", site, host)
	// The certificate is obtained before Chromium starts, so that the page
	// load measures serving, not issuance.
	if resp, _, err := in.httpsGet(roots, host, "/", "h2"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("h2 request before Chromium: %v %v\n%s", resp, err, in.stderr)
	}

	home := filepath.Join(dir, "home")
	trustInNSS(t, certutil, home, ca.IssuerRootsPEM())
	_, port, _ := net.SplitHostPort(in.https)
	netlog := filepath.Join(dir, "netlog.json")
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium,
		"--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--user-data-dir="+filepath.Join(dir, "profile"),
		// browser.test resolves to tollgate; every other name fails, so
		// nothing of this test leaves the machine.
		"--host-resolver-rules=MAP "+host+" 127.0.0.1, MAP * ~NOTFOUND",
		"--log-net-log="+netlog, "--net-log-capture-mode=Default",
		"--window-size=800,600", "--screenshot="+filepath.Join(dir, "page.png"),
		"https://"+host+":"+port+"/")
	cmd.Env = append(os.Environ(), "HOME="+home)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("chromium took %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}

	log, err := readNetLog(netlog)
	if err != nil {
		t.Fatalf("net log: %v\nchromium output:\n%s", err, out)
	}
	got := log.summarize(host+":"+port, in.https)
	used := got.used()
	t.Logf("net log: %d TCP connection(s) to %s (ALPN %v), %d carried requests; %d h2 session(s), %d streams; statuses %v",
		len(got.sockets), in.https, got.sockets, len(used), len(got.sessions), len(got.streamPaths), got.statuses)
	want := append([]string{"/"}, paths...)
	// Chromium may open a second connection speculatively (its loading
	// predictor preconnects to the page's origin); one that never carried
	// a byte of a request is not counted.
	switch {
	case len(used) != 1:
		t.Errorf("%d TCP connections to %s carried requests, want 1", len(used), in.https)
	case used[0] != "h2":
		t.Errorf("the connection negotiated ALPN %q, want h2", used[0])
	case len(got.sessions) != 1:
		t.Errorf("%d HTTP/2 sessions to %s:%s, want 1", len(got.sessions), host, port)
	}
	slices.Sort(want)
	slices.Sort(got.streamPaths)
	if !slices.Equal(got.streamPaths, want) {
		t.Errorf("paths requested over the HTTP/2 session:\n%q\nwant (index and %d sub-resources):\n%q",
			got.streamPaths, browserSubresources, want)
	}
	if len(got.requests) != len(want) {
		t.Errorf("%d URL requests to %s:%s, want %d: %q", len(got.requests), host, port, len(want), got.requests)
	}
	if n := got.statuses["200"]; n != len(want) || len(got.statuses) != 1 {
		t.Errorf("response statuses %v, want %d × 200", got.statuses, len(want))
	}
	if t.Failed() {
		t.Logf("chromium output:\n%s", out)
	}
}

// browserTools finds chromium and certutil, or fails naming make chromium.
// Under go test -short, the hermetic inner loop, it skips t.
func browserTools(t *testing.T) (chromium, certutil string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs chromium; -short")
	}
	var missing []string
	for _, tool := range []struct {
		cmd *string
		env string
		bin string
		pkg string
	}{{&chromium, "CHROMIUM_BIN", "chromium", "chromium"}, {&certutil, "CERTUTIL_BIN", "certutil", "libnss3-tools"}} {
		if p := os.Getenv(tool.env); p != "" {
			*tool.cmd = p
			continue
		}
		p, err := exec.LookPath(tool.bin)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian %s)", tool.bin, tool.pkg))
			continue
		}
		*tool.cmd = p
	}
	if len(missing) > 0 {
		t.Fatalf("missing %s: run `make chromium` (or `make deps`), which installs them with apt-get",
			strings.Join(missing, " and "))
	}
	return chromium, certutil
}

// writeBrowserPage writes index.html into site, referencing 20 files it
// also writes (8 stylesheets, 6 scripts, 6 SVG images), and returns their
// paths. The icon is inline, so Chromium asks for no favicon.
func writeBrowserPage(t *testing.T, site string) []string {
	t.Helper()
	var head, body strings.Builder
	var paths []string
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(site, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, "/"+name)
	}
	for i := range browserSubresources {
		switch {
		case i < 8:
			name := fmt.Sprintf("s%d.css", i)
			write(name, fmt.Sprintf(".c%d { margin: %dpx }\n", i, i))
			fmt.Fprintf(&head, "<link rel=\"stylesheet\" href=\"/%s\">\n", name)
		case i < 14:
			name := fmt.Sprintf("j%d.js", i)
			write(name, fmt.Sprintf("window.loaded%d = true;\n", i))
			fmt.Fprintf(&body, "<script src=\"/%s\"></script>\n", name)
		default:
			name := fmt.Sprintf("i%d.svg", i)
			write(name, fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="#%06x"/></svg>`, i*0x0a0b0c))
			fmt.Fprintf(&body, "<img src=\"/%s\" alt=\"\" width=\"10\" height=\"10\">\n", name)
		}
	}
	page := "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tollgate h2</title>\n<link rel=\"icon\" href=\"data:,\">\n" +
		head.String() + "</head><body>\n<p>twenty sub-resources</p>\n" + body.String() + "</body></html>\n"
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	return paths
}

// trustInNSS creates the NSS database Chromium reads at
// $HOME/.pki/nssdb and adds each certificate of rootsPEM as a trusted CA
// for TLS servers.
func trustInNSS(t *testing.T, certutil, home string, rootsPEM []byte) {
	t.Helper()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(certutil, append([]string{"-d", "sql:" + db}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v\n%s", args, err, out)
		}
	}
	run("-N", "--empty-password")
	for i, block := range splitPEM(rootsPEM) {
		f := filepath.Join(home, fmt.Sprintf("root%d.pem", i))
		if err := os.WriteFile(f, block, 0o644); err != nil {
			t.Fatal(err)
		}
		run("-A", "-t", "C,,", "-n", fmt.Sprintf("pebble-root-%d", i), "-i", f)
	}
}

// splitPEM splits concatenated PEM certificates (certutil -i reads one).
func splitPEM(b []byte) [][]byte {
	const end = "-----END CERTIFICATE-----"
	var out [][]byte
	for {
		i := bytes.Index(b, []byte(end))
		if i < 0 {
			return out
		}
		out = append(out, append(bytes.TrimSpace(b[:i+len(end)]), '\n'))
		b = b[i+len(end):]
	}
}

// netLog is a Chromium net log (--log-net-log): event and source types are
// numbers, named in its constants.
type netLog struct {
	Constants struct {
		EventTypes  map[string]int `json:"logEventTypes"`
		SourceTypes map[string]int `json:"logSourceType"`
	} `json:"constants"`
	Events []netLogEvent `json:"events"`
}

type netLogEvent struct {
	Type   int `json:"type"`
	Phase  int `json:"phase"`
	Source struct {
		ID   int `json:"id"`
		Type int `json:"type"`
	} `json:"source"`
	Params json.RawMessage `json:"params"`
}

// readNetLog reads the net log; Chromium may leave the events array open
// when it exits, which a closing "]}" repairs.
func readNetLog(path string) (*netLog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var l netLog
	if err := json.Unmarshal(b, &l); err != nil {
		trimmed := bytes.TrimRight(bytes.TrimSpace(b), ",")
		if err2 := json.Unmarshal(append(trimmed, "]}"...), &l); err2 != nil {
			return nil, fmt.Errorf("%w (%d bytes)", err, len(b))
		}
	}
	if len(l.Events) == 0 {
		return nil, errors.New("no events")
	}
	for _, name := range netLogEventsRead {
		if _, ok := l.Constants.EventTypes[name]; !ok {
			return nil, fmt.Errorf("this Chromium's net log has no event type %s", name)
		}
	}
	return &l, nil
}

// netLogEventsRead are the event types summarize reads.
var netLogEventsRead = []string{"TCP_CONNECT_ATTEMPT", "SSL_CONNECT", "SSL_SOCKET_BYTES_SENT", "SOCKET_IN_USE",
	"HTTP2_SESSION", "HTTP2_SESSION_SEND_HEADERS", "URL_REQUEST_START_JOB", "HTTP_TRANSACTION_READ_RESPONSE_HEADERS"}

// netLogSummary is what the net log says about the page load from origin.
type netLogSummary struct {
	// sockets are the TCP connections made to the server's address, by
	// source id, with the ALPN protocol their TLS handshake negotiated.
	sockets map[int]string
	// inUse are those sockets that sent TLS application data or were
	// handed to a request.
	inUse       map[int]bool
	sessions    map[int]bool   // HTTP/2 session sources with the origin
	streamPaths []string       // :path of every HEADERS those sessions sent
	requests    []string       // URL requests to the origin
	statuses    map[string]int // response status of those requests
}

// summarize reads the events of connections to addr and requests to origin
// (host:port). Each event type is looked up by name in the log's constants.
func (l *netLog) summarize(origin, addr string) netLogSummary {
	ev := l.Constants.EventTypes
	s := netLogSummary{sockets: map[int]string{}, inUse: map[int]bool{}, sessions: map[int]bool{}, statuses: map[string]int{}}
	sessionEvents := map[int][]netLogEvent{}
	for _, e := range l.Events {
		var p map[string]any
		_ = json.Unmarshal(e.Params, &p)
		str := func(k string) string { v, _ := p[k].(string); return v }
		switch e.Type {
		case ev["TCP_CONNECT_ATTEMPT"]:
			if str("address") == addr {
				s.sockets[e.Source.ID] = ""
			}
		case ev["SSL_CONNECT"]:
			// The end of the handshake carries the negotiated protocol; the
			// TLS socket logs to the TCP connection's source.
			if _, ok := s.sockets[e.Source.ID]; ok && e.Phase == 2 {
				s.sockets[e.Source.ID] = str("next_proto")
			}
		case ev["SSL_SOCKET_BYTES_SENT"], ev["SOCKET_IN_USE"]:
			if _, ok := s.sockets[e.Source.ID]; ok {
				s.inUse[e.Source.ID] = true
			}
		case ev["HTTP2_SESSION"]:
			if e.Phase == 1 && str("host") == origin {
				s.sessions[e.Source.ID] = true
			}
		case ev["HTTP2_SESSION_SEND_HEADERS"]:
			sessionEvents[e.Source.ID] = append(sessionEvents[e.Source.ID], e)
		case ev["URL_REQUEST_START_JOB"]:
			if u := str("url"); strings.HasPrefix(u, "https://"+origin+"/") {
				s.requests = append(s.requests, u)
			}
		case ev["HTTP_TRANSACTION_READ_RESPONSE_HEADERS"]:
			// Chromium writes every response, h2 included, with an
			// HTTP/1.1-style status line first ("HTTP/1.1 200").
			if hs, ok := p["headers"].([]any); ok && len(hs) > 0 {
				if f := strings.Fields(fmt.Sprint(hs[0])); len(f) >= 2 {
					s.statuses[f[1]]++
				}
			}
		}
	}
	for id := range s.sessions {
		for _, e := range sessionEvents[id] {
			var p struct {
				Headers []string `json:"headers"`
			}
			_ = json.Unmarshal(e.Params, &p)
			for _, h := range p.Headers {
				if v, ok := strings.CutPrefix(h, ":path: "); ok {
					s.streamPaths = append(s.streamPaths, v)
				}
			}
		}
	}
	return s
}

// used returns the ALPN protocol of each socket that was used.
func (s netLogSummary) used() []string {
	var out []string
	for id := range s.inUse {
		out = append(out, s.sockets[id])
	}
	return out
}
