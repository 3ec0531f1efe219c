package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/internal/pebbletest"
	"github.com/tollgate-edge/tollgate/internal/redistest"
)

// drillCommands returns the command lines between the drill markers of
// docs/install.md.
func drillCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/install.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- drill:begin -->")
	block, _, ok2 := strings.Cut(rest, "<!-- drill:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/install.md has no drill block (<!-- drill:begin --> … <!-- drill:end -->)")
	}
	var cmds []string
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "```") || strings.HasPrefix(line, "#") {
			continue
		}
		cmds = append(cmds, line)
	}
	if len(cmds) < 2 {
		t.Fatalf("the drill block holds %d commands", len(cmds))
	}
	return cmds
}

// tollgateCmd runs the built binary as `tollgate` would be run by an
// operator: through the shell, found on PATH, with the config's secrets in
// the environment.
func tollgateCmd(t *testing.T, line string) (string, int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", line)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(binary)+":"+os.Getenv("PATH"), "E2E_TOKEN="+e2eToken, "TOLLGATE_ADMIN_TOKEN=")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// orgIDs lists the node's orgs through the admin API.
func (in *instance) orgIDs(t *testing.T) []string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+in.admin+"/v1/orgs", nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Orgs []struct{ ID string } `json:"orgs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range list.Orgs {
		ids = append(ids, o.ID)
	}
	return ids
}

// createOrg creates an org through the admin API and returns the status.
func (in *instance) createOrg(id string) (int, error) {
	req, _ := http.NewRequest("POST", "http://"+in.admin+"/v1/orgs", strings.NewReader(fmt.Sprintf(`{"id":%q,"plan":"free"}`, id)))
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestRestoreDrill runs the restore drill of docs/install.md, line for line,
// against a node serving HTTPS under load while the admin API takes writes:
// the backup is taken online, restored into a fresh store, and a node on
// that store serves the same registry and the same certificate, without
// asking the CA again.
func TestRestoreDrill(t *testing.T) {
	ca := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	roots, err := ca.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The writer below sends org creations back to back, as fast as the
	// node answers: the drill is about backups under write load, so the
	// admin API's per-token request limit is off here.
	in := startTollgateFull(t, dir, httpsServer+"\nadmin_requests_per_second = -1", "", acmeSection(ca, ""))
	defer in.stop(t)
	in.addSite(t, "shop", "free", in.siteDir(t, "restored home"), "shop.test")
	resp, body, err := in.httpsGet(roots, "shop.test", "/", "http/1.1")
	if err != nil || resp.StatusCode != 200 || body != "restored home" {
		t.Fatalf("first HTTPS request: %v %v %q\n%s", resp, err, body, in.stderr)
	}
	serial := resp.TLS.PeerCertificates[0].SerialNumber
	orders := ca.Orders()

	// The drill uses the config's admin address; this node bound port 0.
	cfg, err := os.ReadFile(in.configPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), `admin = "127.0.0.1:0"`, fmt.Sprintf("admin = %q", in.admin), 1))
	if err := os.WriteFile(in.configPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	// Load: HTTPS requests, and org writes through the admin API.
	l := startLoadTLS(in, "shop.test", roots)
	waitFor(t, func() bool { return l.ok.Load() >= 50 })
	var created atomic.Int64
	var writeErr atomic.Value
	stopWrites := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stopWrites:
				return
			default:
			}
			code, err := in.createOrg(fmt.Sprintf("w%d", i))
			if err != nil || code != http.StatusCreated {
				writeErr.Store(fmt.Sprintf("org w%d: %d %v", i, code, err))
				return
			}
			created.Add(1)
		}
	}()
	waitFor(t, func() bool { return created.Load() >= 20 })
	before := created.Load() // orgs w0..w(before-1) exist before the backup starts

	backups := filepath.Join(t.TempDir(), "backups")
	for _, line := range drillCommands(t) {
		line = strings.ReplaceAll(line, "/etc/tollgate/tollgate.toml", in.configPath)
		line = strings.ReplaceAll(line, "/var/backups/tollgate", backups)
		out, code := tollgateCmd(t, line)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s\nnode log:\n%s", line, code, out, in.stderr)
		}
		t.Logf("$ %s\n%s", line, out)
		if strings.Contains(line, "store backup") && !strings.Contains(out, "taken by the node at "+in.admin) {
			t.Fatalf("the backup was not taken online by the node:\n%s", out)
		}
	}
	waitFor(t, func() bool { return created.Load() >= before+20 }) // writes went on
	close(stopWrites)
	wg.Wait()
	if msg := writeErr.Load(); msg != nil {
		t.Fatalf("an admin write failed during the backup: %v", msg)
	}
	_, served := l.finish()
	if l.failed.Load() != 0 || served == 0 {
		t.Fatalf("during the backup: %d requests served, %d failed", served, l.failed.Load())
	}
	t.Logf("under load: %d HTTPS requests and %d org writes, none failed", served, created.Load())

	// A node on the restored store (the path the drill's sed wrote).
	restored := startTollgateFull(t, filepath.Join(backups, "drill"), httpsServer, "", acmeSection(ca, ""))
	defer restored.stop(t)
	got, live := restored.orgIDs(t), in.orgIDs(t)
	for _, id := range append([]string{"shop"}, fmt.Sprintf("w%d", before-1)) {
		if !slices.Contains(got, id) {
			t.Fatalf("restored registry lacks org %s (has %d orgs)", id, len(got))
		}
	}
	for _, id := range got {
		if !slices.Contains(live, id) {
			t.Fatalf("restored registry has org %s the live node never had", id)
		}
	}
	resp, body, err = restored.httpsGet(roots, "shop.test", "/", "h2")
	if err != nil || resp.StatusCode != 200 || body != "restored home" {
		t.Fatalf("restored node over HTTPS: %v %v %q\n%s", resp, err, body, restored.stderr)
	}
	if s := resp.TLS.PeerCertificates[0].SerialNumber; s.Cmp(serial) != 0 {
		t.Fatalf("restored node served certificate %x, the live one %x", s, serial)
	}
	if ca.Orders() != orders {
		t.Fatalf("the restored node ordered %d certificates; it should have had the backup's", ca.Orders()-orders)
	}
	t.Logf("restored: %d of the live node's %d orgs, same certificate, no new order", len(got), len(live))
}

// TestBackupRestoreRedis: with [store] redis, a backup exports the
// registry, the account history and the certificates; after Redis comes
// back empty, the registry is restored from the running node's snapshot
// (--from-node) and the certificates from the file, and the node serves and
// takes writes again.
func TestBackupRestoreRedis(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	dir := t.TempDir()
	in := startTollgateWith(t, dir, fmt.Sprintf("redis = %q", "redis://"+rs.Addr()))
	defer in.stop(t)
	for i, plan := range []string{"big", "bigger"} { // bigger ranks above big: a move up
		if out, code := in.cli(t, "plan", "put", plan, "--rank", strconv.Itoa(i)); code != 0 {
			t.Fatal(out)
		}
	}
	in.addSite(t, "acme", "big", in.siteDir(t, "from redis"), "www.acme.example", "b.acme.example")
	if out, code := in.cli(t, "org", "set", "acme", "--plan", "bigger"); code != 0 { // an account event
		t.Fatal(out)
	}
	if out, code := in.cli(t, "credit", "grant", "acme", "5000"); code != 0 { // a prepaid credit entry
		t.Fatal(out)
	}
	rc := rs.NewClient(t)
	certs := acme.NewRedisStorage(rc, acme.RedisStorageOptions{})
	certKey := "certificates/acme-v02/www.acme.example/www.acme.example.crt"
	if err := certs.Store(ctx, certKey, []byte("-----BEGIN CERTIFICATE-----\nissued\n")); err != nil {
		t.Fatal(err)
	}
	hlen := func(bucket string) int64 {
		n, err := rc.HLen(ctx, "{tollgate:reg}:b:"+bucket).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	want := map[string]int64{}
	for _, b := range []string{"plans", "orgs", "sites", "domains", "org_events"} {
		want[b] = hlen(b)
	}
	if want["org_events"] == 0 || want["domains"] != 2 {
		t.Fatalf("setup: %v", want)
	}
	served := func(host string) bool {
		resp, body := in.get(t, host, "/")
		return resp.StatusCode == 200 && body == "from redis"
	}

	file := filepath.Join(t.TempDir(), "cluster.db")
	out, code := tollgateCmd(t, fmt.Sprintf("tollgate store backup --config %s %s", in.configPath, file))
	if code != 0 || !strings.Contains(out, "source redis") {
		t.Fatalf("backup: exit %d\n%s", code, out)
	}

	// Redis loses everything; the node keeps serving its snapshot.
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	readyz := func() string {
		resp, err := http.Get("http://" + in.admin + "/readyz")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitFor(t, func() bool { return strings.Contains(readyz(), "registry: lost") })
	if !served("www.acme.example") {
		t.Fatal("the node stopped serving when Redis lost the registry")
	}

	// 1. The registry from the running node.
	out, code = tollgateCmd(t, fmt.Sprintf("tollgate store restore --config %s --from-node %s", in.configPath, in.admin))
	if code != 0 {
		t.Fatalf("restore --from-node: exit %d\n%s\n%s", code, out, in.stderr)
	}
	for _, b := range []string{"plans", "orgs", "sites", "domains"} {
		if got := hlen(b); got != want[b] {
			t.Fatalf("after restore --from-node, redis holds %d %s, want %d", got, b, want[b])
		}
	}
	waitFor(t, func() bool { return !strings.Contains(readyz(), "registry: lost") })
	if code, err := in.createOrg("after"); err != nil || code != http.StatusCreated {
		t.Fatalf("a registry write after the restore: %d %v", code, err)
	}
	if !served("b.acme.example") {
		t.Fatal("not served after the restore")
	}

	// 2. A file into a Redis holding a registry: refused without --force.
	out, code = tollgateCmd(t, fmt.Sprintf("tollgate store restore --config %s %s", in.configPath, file))
	if code != 1 || !strings.Contains(out, "--force") {
		t.Fatalf("restore over a registry without --force: exit %d\n%s", code, out)
	}
	if n := hlen("orgs"); n != want["orgs"]+1 {
		t.Fatalf("a refused restore changed the registry: %d orgs", n)
	}

	// 3. With --force: the backup's registry exactly (org "after" goes),
	// the account history and the certificate back.
	out, code = tollgateCmd(t, fmt.Sprintf("tollgate store restore --force --config %s %s", in.configPath, file))
	if code != 0 || !strings.Contains(out, "certificates: 1 written") || !strings.Contains(out, "1 credit entries merged") {
		t.Fatalf("restore --force: exit %d\n%s", code, out)
	}
	// The ledger came back once, though both restores merged it.
	if out, code := in.cli(t, "--json", "credit", "list", "acme"); code != 0 || !strings.Contains(out, `"balance": 5000`) {
		t.Fatalf("credit after the restores: %d %s", code, out)
	}
	// The history is merged, not replaced: it keeps the two creation
	// events (plan, state) of org "after".
	want["org_events"] += 2
	for b, n := range want {
		if got := hlen(b); got != n {
			t.Fatalf("after restore --force, redis holds %d %s, want %d", got, b, n)
		}
	}
	if v, err := certs.Load(ctx, certKey); err != nil || !strings.Contains(string(v), "issued") {
		t.Fatalf("certificate after restore: %q %v", v, err)
	}
	waitFor(t, func() bool { return !slices.Contains(in.orgIDs(t), "after") })
	if !served("www.acme.example") {
		t.Fatal("not served after the forced restore")
	}
}
