package admin

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"

	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
)

// Bulk import and export of the registry (POST /v1/import, GET
// /v1/export), for operators moving their tenants from another host, and
// the CLI's `tollgate admin import FILE` / `export`.

const (
	contentTypeNDJSON = "application/x-ndjson"
	// importMaxBytes caps one import request's body: MaxImportBatch records
	// of a few KiB each.
	importMaxBytes = 8 << 20
)

// ImportSummary is the answer of POST /v1/import.
type ImportSummary struct {
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	Refused   int `json:"refused"`
	// Refusals say why each refused line was refused, in order.
	Refusals []Refusal `json:"refusals"`
}

// Refusal is one refused line of an import.
type Refusal struct {
	Line   int         `json:"line"` // 1-based, in the request body
	Kind   string      `json:"kind,omitempty"`
	ID     string      `json:"id,omitempty"`
	Status int         `json:"status"` // what the single write would have answered
	Code   reason.Code `json:"code"`   // the code of that answer's problem
	Detail string      `json:"detail"`
}

// importRecords handles POST /v1/import: a body of NDJSON records (one
// sites.Record per line, blank lines skipped, at most MaxImportBatch),
// written as one registry write. A line that does not parse, or that the
// registry refuses, is reported and skipped; the others are written.
func (s *Server) importRecords(w http.ResponseWriter, r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != contentTypeNDJSON {
			return fmt.Errorf("%w: Content-Type %q; send %s", errMediaType, ct, contentTypeNDJSON)
		}
	}
	var recs []sites.Record
	var lines []int // line of each record
	sum := ImportSummary{Refusals: []Refusal{}}
	sc := bufio.NewScanner(http.MaxBytesReader(w, r.Body, importMaxBytes))
	sc.Buffer(make([]byte, 64<<10), importMaxBytes)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if len(recs) == sites.MaxImportBatch {
			return badRequest("more than %d records in one request; send them in batches", sites.MaxImportBatch)
		}
		var rec sites.Record
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			sum.Refusals = append(sum.Refusals, Refusal{Line: n, Status: http.StatusBadRequest, Code: reason.BadRequest, Detail: detail(decodeError(err), errBadRequest)})
			continue
		}
		recs = append(recs, rec)
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) || errors.Is(err, bufio.ErrTooLong) {
			return &http.MaxBytesError{Limit: importMaxBytes}
		}
		return badRequest("reading the body: %v", err)
	}
	results, err := s.reg.Import(r.Context(), recs)
	if err != nil {
		return err
	}
	for i, res := range results {
		switch res.Outcome {
		case sites.Created:
			sum.Created++
		case sites.Updated:
			sum.Updated++
		case sites.Unchanged:
			sum.Unchanged++
		default:
			p, _ := problemFor(res.Err)
			sum.Refusals = append(sum.Refusals, Refusal{Line: lines[i], Kind: res.Kind, ID: res.ID, Status: p.Status, Code: p.Code, Detail: p.Detail})
		}
	}
	sum.Refused = len(sum.Refusals)
	slices.SortStableFunc(sum.Refusals, func(a, b Refusal) int { return cmp.Compare(a.Line, b.Line) })
	writeJSON(w, http.StatusOK, sum)
	return nil
}

// export handles GET /v1/export: every record of the registry as NDJSON,
// in the order an import needs them (plans, orgs, sites, domains, each by
// id), from one snapshot.
func (s *Server) export(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", contentTypeNDJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	for rec := range s.reg.Snapshot().Export() {
		if err := enc.Encode(rec); err != nil {
			return nil // the client went away; the status is sent
		}
	}
	_ = bw.Flush()
	return nil
}

// Import sends one batch of NDJSON records (POST /v1/import).
func (c *Client) Import(ctx context.Context, ndjson []byte) (ImportSummary, error) {
	var out ImportSummary
	_, err := c.doRaw(ctx, http.MethodPost, "/v1/import", http.Header{"Content-Type": {contentTypeNDJSON}}, bytes.NewReader(ndjson), &out)
	return out, err
}

// Export copies the registry's NDJSON export (GET /v1/export) to w.
func (c *Client) Export(ctx context.Context, w io.Writer) error {
	return c.stream(ctx, "/v1/export", w)
}
