package content

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// TestChangedFileOutOfDescriptorsServesCached: a cached file that changed
// on disk while the process has one descriptor to spare (enough to open
// the directory, not the file) is served from the cache, not as an error,
// and read again once descriptors are back.
func TestChangedFileOutOfDescriptorsServesCached(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "index.html")
	if err := os.WriteFile(page, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := NewCache(sites.Config{DirRevalidate: time.Second})
	d, err := c.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if f, err := d.GetAt([]byte("/index.html"), start); err != nil || string(f.Body) != "v1" {
		t.Fatalf("first read: %v", err)
	}
	if err := os.WriteFile(page, []byte("v2, longer"), 0o644); err != nil {
		t.Fatal(err)
	}

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Leave exactly one descriptor: a limit just above the open ones, every
	// free number below it filled with /dev/null, then one closed again.
	tight := lim
	tight.Cur = uint64(openFDs(t) + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &tight); err != nil {
		t.Fatal(err)
	}
	var fill []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		fill = append(fill, f)
	}
	fill[len(fill)-1].Close()
	fill = fill[:len(fill)-1]
	f, err := d.GetAt([]byte("/index.html"), start.Add(2*time.Second))
	for _, f := range fill {
		f.Close()
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if err != nil || string(f.Body) != "v1" {
		t.Fatalf("out of descriptors: %v; want the cached v1", err)
	}
	if f, err := d.GetAt([]byte("/index.html"), start.Add(4*time.Second)); err != nil || string(f.Body) != "v2, longer" {
		t.Fatalf("descriptors back: %v; want v2", err)
	}
}
