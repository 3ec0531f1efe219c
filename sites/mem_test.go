//go:build !race

package sites

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fillStore writes n orgs, sites and domains into st as the bulk import
// does (org o-<i> on plan big, site s-<i> serving a directory, domain
// s-<i>.scale.bench), in transactions of 30,000 records.
func fillStore(t testing.TB, st Store, n int) {
	t.Helper()
	ctx := context.Background()
	at := At(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	ops := []Change{putOp(bucketPlans, "big", &Plan{Name: "big"})}
	for i := range n {
		org, site, name := fmt.Sprintf("o-%d", i), fmt.Sprintf("s-%d", i), fmt.Sprintf("s-%d.scale.bench", i)
		ops = append(ops,
			putOp(bucketOrgs, org, &Org{ID: org, Plan: "big", State: StateActive, CreatedAt: at}),
			putOp(bucketSites, site, &Site{ID: site, Org: org, Source: Source{Type: SourceDir, Path: "/srv/www"}, CreatedAt: at}),
			putOp(bucketDomains, name, &Domain{Name: name, Site: site, Status: DomainVerified, Via: ViaOperator, CreatedAt: at}))
		if len(ops) >= 30_000 || i == n-1 {
			if err := st.Apply(ctx, ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
}

// heapInUse is the heap the program holds after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// rssKiB reads VmRSS (and its file-backed part) from /proc/self/status;
// zero where there is none.
func rssKiB() (rss, file int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "RssFile":
			file = n
		}
	}
	return rss, file
}

// memSites is the registry size of TestHeapPerSite; TOLLGATE_MEM_SITES
// overrides it (a measurement at a million sites).
func memSites(t *testing.T) int {
	if s := os.Getenv("TOLLGATE_MEM_SITES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return 100_000
}

// maxHeapPerSite bounds the heap a loaded registry holds per site with its
// org and domain: the three records (an Org alone is 176 bytes, its times
// Instants), their strings, their entries in the three record maps and the
// two indexes. 564 measured at 100,000; 709 with time.Time records.
const maxHeapPerSite = 620

// TestHeapPerSite loads a registry of 100,000 sites, each with its org and
// a domain, from a bbolt store as start-up does, and bounds the heap it
// holds per site (maxHeapPerSite). With TOLLGATE_MEM_PROFILE it writes a
// heap profile there, the registry still held; with TOLLGATE_MEM_STORE the
// store is that file, filled unless it holds the sites already, and kept.
func TestHeapPerSite(t *testing.T) {
	n := memSites(t)
	path := filepath.Join(t.TempDir(), "reg.db")
	if keep := os.Getenv("TOLLGATE_MEM_STORE"); keep != "" {
		path = keep // kept, for a tollgate to start on
	}
	st := openStore(t, path)
	held := 0
	mustNoErr(t, st.Scan(context.Background(), bucketSites, func(_, _ []byte) error { held++; return nil }))
	if held < n {
		fillStore(t, st, n)
	}
	before := heapInUse()
	rss0, file0 := rssKiB()
	start := time.Now()
	r, err := New(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	after := heapInUse()
	rss1, file1 := rssKiB()
	if r.Snapshot().Sites.Len() != n {
		t.Fatalf("loaded %d sites, want %d", r.Snapshot().Sites.Len(), n)
	}
	perSite := float64(after-before) / float64(n)
	t.Logf("%d sites: load %v, heap %.1f MiB (%.0f B a site), RSS %d → %d MiB (file-backed %d → %d MiB)",
		n, took.Round(time.Millisecond), float64(after-before)/(1<<20), perSite, rss0>>10, rss1>>10, file0>>10, file1>>10)
	if file0 > 0 && file1 > file0+16<<10 {
		t.Errorf("file-backed RSS grew from %d to %d MiB: the store's pages read at load stayed resident", file0>>10, file1>>10)
	}
	if perSite > maxHeapPerSite {
		t.Errorf("the registry holds %.0f bytes of heap a site, more than %d", perSite, maxHeapPerSite)
	}
	debug.FreeOSMemory()
	rss2, file2 := rssKiB()
	t.Logf("after debug.FreeOSMemory: RSS %d MiB (file-backed %d MiB)", rss2>>10, file2>>10)
	if out := os.Getenv("TOLLGATE_MEM_PROFILE"); out != "" {
		writeHeapProfile(t, out)
	}
	runtime.KeepAlive(r)
}

// writeHeapProfile writes the heap profile, the registry still held, to
// path (go tool pprof -sample_index=inuse_space).
func writeHeapProfile(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}

// TestImportMemory imports TOLLGATE_MEM_IMPORT sites (each with its org and
// a domain) in batches as the bulk endpoint does and logs the heap and the
// RSS after; it is a measurement, skipped without the variable.
func TestImportMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TOLLGATE_MEM_IMPORT"))
	if n == 0 {
		t.Skip("TOLLGATE_MEM_IMPORT is not set")
	}
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "reg.db"))
	r, err := New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	mustNoErr(t, func() error { _, err := r.PutPlan(ctx, Plan{Name: "big"}); return err }())
	before := heapInUse()
	var batch []Record
	for i := range n {
		org, site := fmt.Sprintf("o-%d", i), fmt.Sprintf("s-%d", i)
		batch = append(batch, Record{Org: &Org{ID: org, Plan: "big"}},
			Record{Site: &Site{ID: site, Org: org, Source: Source{Type: SourceDir, Path: "/srv/www"}}},
			Record{Domain: &Domain{Name: site + ".scale.bench", Site: site}})
		if len(batch) >= 999 || i == n-1 {
			if _, err := r.Import(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	rss, file := rssKiB()
	after := heapInUse()
	t.Logf("%d sites imported: heap %.0f B a site, RSS %d MiB (file-backed %d MiB)", n, float64(after-before)/float64(n), rss>>10, file>>10)
	debug.FreeOSMemory()
	rss, file = rssKiB()
	t.Logf("after FreeOSMemory: RSS %d MiB (file-backed %d MiB)", rss>>10, file>>10)
	if out := os.Getenv("TOLLGATE_MEM_PROFILE"); out != "" {
		writeHeapProfile(t, out)
	}
	runtime.KeepAlive(r)
}
