package sites

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestImport(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	_, err := r.Reserve(ReservedName{Name: "pages.example", Subdomains: true, Key: "sites.pages_domain"})
	mustNoErr(t, err)
	created := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	base := []Record{
		{Plan: &Plan{Name: "two", Sites: 2, Domains: 3}},
		{Org: &Org{ID: "acme", Name: "Acme", Plan: "two", CreatedAt: At(created)}},
		{Site: &Site{ID: "www", Org: "acme", Source: Source{Type: SourceDir, Path: dir}}},
		{Domain: &Domain{Name: "WWW.Acme.Example.", Site: "www"}},
	}
	step := func(name string, recs []Record, want ...string) []ImportResult {
		t.Helper()
		res, err := r.Import(ctx, recs)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got []string
		for _, x := range res {
			got = append(got, x.Outcome)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: outcomes %v, want %v (%+v)", name, got, want, res)
		}
		return res
	}
	step("first import", base, Created, Created, Created, Created)
	if o, _ := r.Org("acme"); !o.CreatedAt.Time().Equal(created) || o.State != StateActive {
		t.Errorf("imported org: created_at %v, state %q; want the imported time and active", o.CreatedAt, o.State)
	}
	if d, _ := r.Domain("www.acme.example"); d.Site != "www" || d.Status != DomainVerified || d.Via != ViaOperator {
		t.Errorf("imported domain: %+v", d)
	}
	step("the same again", base, Unchanged, Unchanged, Unchanged, Unchanged)
	step("a changed org", []Record{{Org: &Org{ID: "acme", Name: "Acme Inc", Plan: "two", CreatedAt: At(created)}}}, Updated)

	refused := step("bad records", []Record{
		{Site: &Site{ID: "s2", Org: "acme", Source: Source{Type: SourceDir, Path: dir}}},     // created: the plan's 2nd site
		{Site: &Site{ID: "s3", Org: "acme", Source: Source{Type: SourceDir, Path: dir}}},     // over the plan's 2 sites
		{Site: &Site{ID: "s4", Org: "nobody", Source: Source{Type: SourceDir, Path: dir}}},   // org not found
		{Site: &Site{ID: "bad id", Org: "acme", Source: Source{Type: SourceDir, Path: dir}}}, // invalid
		{Domain: &Domain{Name: "www.acme.example", Site: "s2"}},                              // attached elsewhere
		{Domain: &Domain{Name: "x.pages.example", Site: "s2"}},                               // reserved
		{Domain: &Domain{Name: "not a host", Site: "s2"}},                                    // invalid
		{Plan: &Plan{Name: "neg", Sites: -1}},                                                // invalid
		{Org: &Org{ID: "o2", Plan: "missing"}},                                               // plan not found
		{Plan: &Plan{Name: "p"}, Org: &Org{ID: "o3", Plan: "two"}},                           // two kinds
		{}, // none
		{Domain: &Domain{Name: "odd.example", Site: "s2", Status: "claimed"}},           // neither verified nor pending
		{Org: &Org{ID: "o4", Plan: "two", GiteaOwners: []string{"alice"}}},              // created
		{Org: &Org{ID: "o5", Plan: "two", GiteaOwners: []string{"alice"}}},              // owner taken by o4
		{Site: &Site{ID: "www", Org: "o4", Source: Source{Type: SourceDir, Path: dir}}}, // belongs to acme
	}, Created, Refused, Refused, Refused, Refused, Refused, Refused, Refused, Refused, Refused, Refused, Refused, Created, Refused, Refused)
	for i, want := range []error{nil, ErrConflict, ErrNotFound, ErrInvalid, ErrConflict, ErrReserved, ErrInvalid, ErrInvalid,
		ErrInvalid, ErrInvalid, ErrInvalid, ErrInvalid, nil, ErrConflict, ErrConflict} {
		if got := refused[i].Err; (want == nil) != (got == nil) || want != nil && !errors.Is(got, want) {
			t.Errorf("record %d: error %v, want %v", i, got, want)
		}
	}
	var limit *LimitError
	if !errors.As(refused[1].Err, &limit) || limit.Limit != "sites" {
		t.Errorf("over the site limit: %v, want a LimitError", refused[1].Err)
	}

	// Export, then import into an empty registry: the same records.
	var exported []Record
	for rec := range r.Snapshot().Export() {
		exported = append(exported, rec)
	}
	r2, _ := newRegistry(t)
	res, err := r2.Import(ctx, exported)
	mustNoErr(t, err)
	for i, x := range res {
		if x.Outcome == Refused {
			t.Fatalf("re-importing exported record %d (%s %s) was refused: %v", i, x.Kind, x.ID, x.Err)
		}
	}
	a, b := exportJSON(t, r.Snapshot()), exportJSON(t, r2.Snapshot())
	if a != b {
		t.Errorf("export of the re-imported registry differs:\n%s\nvs\n%s", b, a)
	}

	big := make([]Record, MaxImportBatch+1)
	if _, err := r.Import(ctx, big); !errors.Is(err, ErrInvalid) {
		t.Errorf("a batch of %d records: %v, want ErrInvalid", len(big), err)
	}
}

func exportJSON(t *testing.T, s *Snapshot) string {
	var out []byte
	for rec := range s.Export() {
		b, err := json.Marshal(rec)
		mustNoErr(t, err)
		out = append(append(out, b...), '\n')
	}
	return string(out)
}
