package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The full-disk tests put the store on a small tmpfs of its own and fill it
// with a file while clients load a site: the kernel then refuses bbolt's
// writes (ENOSPC) exactly as a full disk does. bbolt reuses the free pages
// of its file, so a write that fits there still succeeds on a full disk;
// the first usage of orgs that had none needs new pages, and the tests
// bring it: one request to each of newOrgs sites once the disk is full.

// diskFullMeter flushes often so the tests see several flushes fail.
const diskFullMeter = "[meter]\nflush_interval = \"200ms\"\n"

// mountTmpfs mounts a tmpfs of size bytes on dir for the test's duration.
func mountTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs for the store needs root")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// fillDisk writes dir/filler until the filesystem refuses more, and
// returns a func that removes it.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 4 << 10} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Bavail != 0 {
		t.Fatalf("the disk is not full: %d blocks free (%v)", st.Bavail, err)
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFlushErrors waits until the store refused n flushes more.
func (in *instance) waitFlushErrors(t *testing.T, n float64) {
	t.Helper()
	from := in.metric(t, "tollgate_meter_flush_errors_total")
	waitFor(t, func() bool { return in.metric(t, "tollgate_meter_flush_errors_total") >= from+n })
}

// waitTotals polls the usage API until org's totals are want (the meter
// sends what it kept on its first flush), failing with the figures.
func (in *instance) waitTotals(t *testing.T, org string, wantEgress, wantRequests int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		egress, requests := in.usageTotals(t, org)
		if egress == wantEgress && requests == wantRequests {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metered %d bytes in %d requests; clients received %d bytes in %d requests (lost %d bytes, %d requests)",
				egress, requests, wantEgress, wantRequests, wantEgress-egress, wantRequests-requests)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronization
	}
}

// newOrgs is how many orgs get their first usage once the disk is full.
const newOrgs = 40

// startDiskFull starts tollgate with its store on a 24 MiB tmpfs, a site
// for org acme and newOrgs orgs o1… with a site each (s1.example…).
func startDiskFull(t *testing.T) (in *instance, storeDir string) {
	t.Helper()
	dir := t.TempDir()
	storeDir = filepath.Join(dir, "store")
	mountTmpfs(t, storeDir, 24<<20)
	siteDir := filepath.Join(dir, "site")
	os.MkdirAll(siteDir, 0o755)
	os.WriteFile(filepath.Join(siteDir, "index.html"), []byte(strings.Repeat("full disk ", 100)), 0o644)
	in = startTollgateConf(t, storeDir, "", diskFullMeter)
	in.registerSite(t, siteDir)
	for i := 1; i <= newOrgs; i++ {
		steps := [][]string{{"org", "create", fmt.Sprint("o", i), "--plan", "free"},
			{"site", "create", fmt.Sprint("o", i), fmt.Sprint("s", i), "--dir", siteDir},
			{"domain", "add", fmt.Sprint("s", i), fmt.Sprintf("s%d.example", i)}}
		for _, s := range steps {
			if out, code := in.cli(t, s...); code != 0 {
				t.Fatalf("%v: %s", s, out)
			}
		}
	}
	return in, storeDir
}

// visitNewOrgs sends one request to each new org's site and returns the
// bytes each client received.
func (in *instance) visitNewOrgs(t *testing.T) []int64 {
	t.Helper()
	got := make([]int64, newOrgs+1)
	for i := 1; i <= newOrgs; i++ {
		var d countingDialer
		c := d.client()
		req, _ := http.NewRequest("GET", "http://"+in.http+"/", nil)
		req.Host = fmt.Sprintf("s%d.example", i)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.CloseIdleConnections()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", req.Host, resp.StatusCode)
		}
		got[i] = d.n.Load()
	}
	return got
}

// checkNewOrgs requires each new org's usage to be the one request its
// client received.
func (in *instance) checkNewOrgs(t *testing.T, received []int64) {
	t.Helper()
	for i := 1; i <= newOrgs; i++ {
		in.waitTotals(t, fmt.Sprint("o", i), received[i], 1)
	}
}

// TestReadyzWhileDiskFull: /readyz answers 503 naming the meter-flush check
// (and the kernel's reason) while the store refuses flushes, visitors are
// served meanwhile, and it is ready again once space is freed.
func TestReadyzWhileDiskFull(t *testing.T) {
	in, storeDir := startDiskFull(t)
	defer in.stop(t)
	l := startLoad(in, "www.acme.example")
	waitFor(t, func() bool { return l.ok.Load() >= 100 })

	free := fillDisk(t, storeDir)
	visited := in.visitNewOrgs(t)
	waitFor(t, func() bool { code, _ := in.readyz(t); return code == 503 })
	code, body := in.readyz(t)
	if code != 503 || !strings.Contains(body, "meter-flush") {
		t.Fatalf("/readyz with the disk full: %d %q; want 503 naming meter-flush", code, body)
	}
	// The body names the check; the log says why.
	if log := in.stderr.String(); !strings.Contains(log, `"check":"meter-flush"`) || !strings.Contains(log, "no space left on device") {
		t.Fatalf("no log line names meter-flush and the full disk:\n%s", log)
	}
	t.Logf("disk full: /readyz %d %s", code, body)
	served := l.ok.Load()
	waitFor(t, func() bool { return l.ok.Load() >= served+100 })

	free()
	waitFor(t, func() bool { code, _ := in.readyz(t); return code == 200 })
	if code, body := in.readyz(t); code != 200 || body != "ready" {
		t.Fatalf("/readyz after freeing space: %d %q; want 200 ready", code, body)
	}
	received, requests := l.finish()
	if f := l.failed.Load(); f != 0 {
		t.Fatalf("%d visitor requests failed while the disk was full", f)
	}
	in.waitTotals(t, "acme", received, requests)
	in.checkNewOrgs(t, visited)
}

// fillUnderLoad starts tollgate on a small tmpfs under load, fills the disk,
// sends the new orgs their first requests and waits until two flushes were
// refused and 300 more requests were served with the disk full.
func fillUnderLoad(t *testing.T) (in *instance, storeDir string, l *load, free func(), visited []int64) {
	t.Helper()
	in, storeDir = startDiskFull(t)
	l = startLoad(in, "www.acme.example")
	waitFor(t, func() bool { return l.ok.Load() >= 100 })
	free = fillDisk(t, storeDir)
	visited = in.visitNewOrgs(t)
	in.waitFlushErrors(t, 2)
	served := l.ok.Load()
	waitFor(t, func() bool { return l.ok.Load() >= served+300 })
	return in, storeDir, l, free, visited
}

// TestSIGTERMWithDiskFullKeepsUsage: the disk fills under load, tollgate
// gets SIGTERM and stops cleanly; after space is freed and it starts again,
// the usage API reports exactly what the clients received.
func TestSIGTERMWithDiskFullKeepsUsage(t *testing.T) {
	in, storeDir, l, free, visited := fillUnderLoad(t)
	before := in.metric(t, "tollgate_meter_flush_errors_total")
	in.stop(t)
	received, requests := l.finish()
	if strings.Contains(in.stderr.String(), "usage not flushed") {
		t.Fatalf("usage dropped at shutdown:\n%s", in.stderr)
	}
	if before < 2 {
		t.Fatalf("%v flushes failed before SIGTERM; the test needs the store to refuse them", before)
	}

	free()
	in = startTollgateConf(t, storeDir, "", diskFullMeter)
	defer in.stop(t)
	in.waitTotals(t, "acme", received, requests)
	in.checkNewOrgs(t, visited)
	t.Logf("%d requests, %d bytes (%v flushes refused by the full disk) metered exactly across SIGTERM", requests, received, before)
}

// TestSIGKILLWithDiskFullLosesAtMostOneInterval: with the disk full, a
// kill -9 loses only what was counted after the last flush attempt (at
// most meter.flush_interval): usage counted before it is in the spool file
// and reported exactly after a restart.
func TestSIGKILLWithDiskFullLosesAtMostOneInterval(t *testing.T) {
	in, storeDir, l, free, visited := fillUnderLoad(t)
	received, requests := l.finish()
	// Nothing is counted after the load; wait for a flush attempt to
	// begin and end after it (two more refused flushes), then kill.
	in.waitFlushErrors(t, 2)
	if err := in.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-in.exited

	free()
	in = startTollgateConf(t, storeDir, "", diskFullMeter)
	defer in.stop(t)
	in.waitTotals(t, "acme", received, requests)
	in.checkNewOrgs(t, visited)
	t.Logf("%d requests, %d bytes (the last ones counted with the disk full) metered exactly across kill -9", requests, received)
}
