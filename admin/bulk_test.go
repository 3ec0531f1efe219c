package admin

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/reason"
)

func TestImportExport(t *testing.T) {
	e := newTestEnv(t, Config{}, nil)
	nd := map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": contentTypeNDJSON}
	body := strings.Join([]string{
		`{"plan":{"name":"two","sites":2}}`,
		`{"org":{"id":"acme","name":"Acme","plan":"two"}}`,
		``,
		`{"site":{"id":"www","org":"acme","source":{"type":"dir","path":"/srv/www"}}}`,
		`{"domain":{"domain":"www.acme.example","site":"www"}}`,
		`{"site": not json}`,
		`{"site":{"id":"x","org":"nobody","source":{"type":"dir","path":"/srv/x"}}}`,
		`{"org":{"id":"o2","plan":"two","color":"red"}}`,
	}, "\n")
	r := e.callWith(t, "POST", "/v1/import", body, nd)
	if r.status != http.StatusOK {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	var sum ImportSummary
	r.json(t, &sum)
	if sum.Created != 4 || sum.Refused != 3 || len(sum.Refusals) != 3 {
		t.Fatalf("summary %+v; want 4 created, 3 refused", sum)
	}
	for i, want := range []Refusal{
		{Line: 6, Status: 400, Code: reason.BadRequest, Detail: "malformed JSON"},
		{Line: 7, Kind: "site", ID: "x", Status: 404, Code: reason.NotFound, Detail: `org "nobody" does not exist`},
		{Line: 8, Status: 400, Code: reason.BadRequest, Detail: `unknown field "color"`},
	} {
		got := sum.Refusals[i]
		if got.Line != want.Line || got.Kind != want.Kind || got.ID != want.ID || got.Status != want.Status || got.Code != want.Code || !strings.Contains(got.Detail, want.Detail) {
			t.Errorf("refusal %d = %+v, want %+v", i, got, want)
		}
	}
	// Again: nothing changes.
	r = e.callWith(t, "POST", "/v1/import", body, nd)
	r.json(t, &sum)
	if sum.Created != 0 || sum.Unchanged != 4 || sum.Refused != 3 {
		t.Errorf("second import: %+v; want 4 unchanged", sum)
	}

	for _, c := range []struct {
		name, body, ctype string
		status            int
	}{
		{"wrong media type", `{"plan":{"name":"p"}}`, "application/json", 415},
		{"too many records", strings.Repeat(`{"plan":{"name":"p"}}`+"\n", 1001), contentTypeNDJSON, 400},
		{"too large", strings.Repeat("x", importMaxBytes+1), contentTypeNDJSON, 413},
	} {
		r := e.callWith(t, "POST", "/v1/import", c.body, map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": c.ctype})
		checkProblem(t, r, c.status)
	}
	if r := e.callWith(t, "POST", "/v1/import", body, map[string]string{"Content-Type": contentTypeNDJSON}); r.status != 401 {
		t.Errorf("import without a token: %d", r.status)
	}

	r = e.call(t, "GET", "/v1/export", "")
	lines := strings.Split(strings.TrimSpace(string(r.body)), "\n")
	if r.status != 200 || r.header.Get("Content-Type") != contentTypeNDJSON || len(lines) != 5 ||
		!strings.HasPrefix(lines[0], `{"plan":{"name":"free"`) || !strings.HasPrefix(lines[4], `{"domain":{"domain":"www.acme.example"`) {
		t.Fatalf("export: %d %q:\n%s", r.status, r.header.Get("Content-Type"), r.body)
	}
}

// TestCLIImportExport: export to a file, import it into another server,
// the same records; refused lines make the command exit 1 with a table.
func TestCLIImportExport(t *testing.T) {
	a, b := newTestEnv(t, Config{}, nil), newTestEnv(t, Config{}, nil)
	ga := []string{"--addr", a.srv.URL, "--token", testToken}
	gb := []string{"--addr", b.srv.URL, "--token", testToken}
	for _, args := range [][]string{
		{"plan", "put", "pro", "--sites", "3"},
		{"org", "create", "acme", "--plan", "pro"},
		{"site", "create", "acme", "www", "--dir", "/srv/www"},
		{"domain", "add", "www", "www.acme.example"},
	} {
		if code, _, errOut := runCLI(append(args, ga...)...); code != 0 {
			t.Fatalf("%v: %s", args, errOut)
		}
	}
	file := filepath.Join(t.TempDir(), "registry.ndjson")
	code, out, errOut := runCLI(append([]string{"export", "--output", file}, ga...)...)
	if code != 0 || !strings.Contains(out, "exported 5 records to "+file) {
		t.Fatalf("export: %d %s %s", code, out, errOut)
	}
	code, out, errOut = runCLI(append([]string{"import", file}, gb...)...)
	if code != 0 || !strings.Contains(out, "created 4, updated 0, unchanged 1, refused 0") {
		t.Fatalf("import: %d %s %s", code, out, errOut)
	}
	_, exportA, _ := runCLI(append([]string{"export"}, ga...)...)
	_, exportB, _ := runCLI(append([]string{"export"}, gb...)...)
	if exportA != exportB || !strings.Contains(exportB, `"www.acme.example"`) {
		t.Errorf("export after the import differs:\n%s\nvs\n%s", exportB, exportA)
	}

	bad := filepath.Join(t.TempDir(), "bad.ndjson")
	if err := os.WriteFile(bad, []byte(`{"site":{"id":"s2","org":"nobody","source":{"type":"dir","path":"/x"}}}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(append([]string{"import", bad}, gb...)...)
	if code != 1 || !strings.Contains(out, "refused 1") || !strings.Contains(out, `org "nobody" does not exist`) {
		t.Errorf("import with a refused line: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(append([]string{"import", "/nonexistent"}, gb...)...); code != 2 || !strings.Contains(errOut, "no such file") {
		t.Errorf("import of a missing file: exit %d %s", code, errOut)
	}
}
