package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// rssFileKiB is the file-backed part of the process's RSS.
func rssFileKiB(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// TestEvictReleasesScannedPages: a scan of 32 MiB of records leaves them
// resident through bbolt's map of the file; Evict takes them out of the
// process's RSS, and they read back the same.
func TestEvictReleasesScannedPages(t *testing.T) {
	ctx := context.Background()
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "evict.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	value := []byte(strings.Repeat("x", 1024))
	var ops []Op
	for i := range 32 << 10 {
		ops = append(ops, Put("records", fmt.Sprintf("k%06d", i), value))
	}
	if err := b.Apply(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	scan := func() (n int) {
		if err := b.Scan(ctx, "records", func(_, v []byte) error { n += len(v); return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	total := scan()
	scanned := rssFileKiB(t)
	if err := b.Evict(ctx); err != nil {
		t.Fatal(err)
	}
	evicted := rssFileKiB(t)
	t.Logf("file-backed RSS: %d MiB after the scan, %d MiB after Evict", scanned>>10, evicted>>10)
	if scanned-evicted < 24<<10 {
		t.Errorf("Evict released %d KiB of the 32 MiB scanned", scanned-evicted)
	}
	if again := scan(); again != total {
		t.Errorf("after Evict a scan reads %d bytes, before %d", again, total)
	}
}
