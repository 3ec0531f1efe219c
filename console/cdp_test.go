package console_test

// A small Chrome DevTools Protocol client over --remote-debugging-pipe:
// Chromium reads commands on its fd 3 and writes answers and events on its
// fd 4, each a JSON message ended by a NUL byte. No WebSocket, no
// dependency.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

type cdpMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// cdp drives one page of a headless Chromium. It is used from one
// goroutine; events read while waiting are kept in seen.
type cdp struct {
	t       *testing.T
	cmd     *exec.Cmd
	in      *os.File // Chromium's fd 3
	out     *bufio.Reader
	msgs    chan cdpMessage
	id      int
	session string
	// errors are the console errors, exceptions and error log entries
	// (CSP violations among them) the page reported.
	errors []string
	loads  int // Page.loadEventFired seen and not yet waited for
}

// startChromium runs chromium headless with the pipe and attaches to its
// first page.
func startChromium(t *testing.T, bin, dir string, args ...string) *cdp {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, bin, append([]string{"--headless=new", "--no-sandbox", "--disable-gpu",
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--remote-debugging-pipe", "--user-data-dir=" + dir,
		"--window-size=1000,900"}, append(args, "about:blank")...)...)
	cmd.ExtraFiles = []*os.File{inR, outW}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	c := &cdp{t: t, cmd: cmd, in: inW, out: bufio.NewReader(outR), msgs: make(chan cdpMessage, 64)}
	go c.read()
	t.Cleanup(func() {
		inW.Close()
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("chromium stderr:\n%s", stderr.String())
		}
	})
	var targets struct {
		TargetInfos []struct {
			TargetID string `json:"targetId"`
			Type     string `json:"type"`
		} `json:"targetInfos"`
	}
	c.call("Target.getTargets", nil, &targets)
	for _, ti := range targets.TargetInfos {
		if ti.Type == "page" {
			var att struct {
				SessionID string `json:"sessionId"`
			}
			c.call("Target.attachToTarget", map[string]any{"targetId": ti.TargetID, "flatten": true}, &att)
			c.session = att.SessionID
			break
		}
	}
	if c.session == "" {
		t.Fatal("chromium has no page target")
	}
	for _, domain := range []string{"Page.enable", "Runtime.enable", "Log.enable"} {
		c.call(domain, nil, nil)
	}
	return c
}

func (c *cdp) read() {
	defer close(c.msgs)
	for {
		b, err := c.out.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMessage
		if json.Unmarshal(b[:len(b)-1], &m) == nil {
			c.msgs <- m
		}
	}
}

// next returns the next message, noting the events it passes.
func (c *cdp) next() cdpMessage {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatal("chromium closed the pipe")
		}
		c.note(m)
		return m
	case <-time.After(30 * time.Second):
		c.t.Fatal("chromium did not answer in 30s")
	}
	return cdpMessage{}
}

func (c *cdp) note(m cdpMessage) {
	var p struct {
		Type             string                            `json:"type"`
		Args             []struct{ Value any }             `json:"args"`
		ExceptionDetails struct{ Text string }             `json:"exceptionDetails"`
		Entry            struct{ Level, Text, URL string } `json:"entry"`
	}
	_ = json.Unmarshal(m.Params, &p)
	switch m.Method {
	case "Page.loadEventFired":
		c.loads++
	case "Runtime.consoleAPICalled":
		if p.Type == "error" || p.Type == "assert" {
			c.errors = append(c.errors, fmt.Sprintf("console.%s %v", p.Type, p.Args))
		}
	case "Runtime.exceptionThrown":
		c.errors = append(c.errors, "exception: "+p.ExceptionDetails.Text)
	case "Log.entryAdded":
		if p.Entry.Level == "error" {
			c.errors = append(c.errors, fmt.Sprintf("log: %s (%s)", p.Entry.Text, p.Entry.URL))
		}
	}
}

// call sends a command to the page's session (or the browser before
// attaching) and decodes its result into out.
func (c *cdp) call(method string, params any, out any) {
	c.t.Helper()
	c.id++
	msg := map[string]any{"id": c.id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if c.session != "" {
		msg["sessionId"] = c.session
	}
	b, _ := json.Marshal(msg)
	if _, err := c.in.Write(append(b, 0)); err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	for {
		m := c.next()
		if m.ID != c.id {
			continue
		}
		if m.Error != nil {
			c.t.Fatalf("%s: %s", method, m.Error.Message)
		}
		if out != nil {
			if err := json.Unmarshal(m.Result, out); err != nil {
				c.t.Fatalf("%s: %v", method, err)
			}
		}
		return
	}
}

// waitLoad waits for the next page load (a navigation, a form post and
// its redirect).
func (c *cdp) waitLoad() {
	c.t.Helper()
	for c.loads == 0 {
		c.next()
	}
	c.loads--
}

func (c *cdp) navigate(url string) {
	c.t.Helper()
	c.loads = 0
	c.call("Page.navigate", map[string]any{"url": url}, nil)
	c.waitLoad()
}

// eval runs a JavaScript expression in the page (the test's probe; the
// console's pages have no script) and returns its value as a string.
func (c *cdp) eval(expr string) string {
	c.t.Helper()
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct{ Text string } `json:"exceptionDetails"`
	}
	c.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		c.t.Fatalf("evaluate %s: %s", expr, r.ExceptionDetails.Text)
	}
	return fmt.Sprint(r.Result.Value)
}

// submit runs expr, which submits a form, and waits for the page it leads
// to.
func (c *cdp) submit(expr string) {
	c.t.Helper()
	c.loads = 0
	c.eval(expr)
	c.waitLoad()
}

// screenshot writes the page as PNG to path.
func (c *cdp) screenshot(path string) []byte {
	c.t.Helper()
	var r struct {
		Data []byte `json:"data"` // base64 in JSON: []byte decodes it
	}
	c.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r)
	if err := os.WriteFile(path, r.Data, 0o644); err != nil {
		c.t.Fatal(err)
	}
	return r.Data
}
