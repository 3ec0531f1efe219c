package admin

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/tollgate-edge/tollgate/sites"
)

// The CLI's import and export (POST /v1/import, GET /v1/export).

// streams are the CLI's stdout and stderr, for the commands that write
// more than their result (export's records, import's progress).
type streams struct{ stdout, stderr io.Writer }

type streamsKey struct{}

func withStreams(ctx context.Context, stdout, stderr io.Writer) context.Context {
	return context.WithValue(ctx, streamsKey{}, streams{stdout, stderr})
}

func streamsOf(ctx context.Context) streams {
	if s, ok := ctx.Value(streamsKey{}).(streams); ok {
		return s
	}
	return streams{io.Discard, io.Discard}
}

// importBatchBytes bounds the body of one import request below the
// server's importMaxBytes.
const importBatchBytes = 4 << 20

func importCmd(*flag.FlagSet) runFunc {
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		data, err := readInput(args[0])
		if err != nil {
			return output{}, err
		}
		lines := bytes.Split(data, []byte("\n"))
		if n := len(lines); n > 0 && len(bytes.TrimSpace(lines[n-1])) == 0 {
			lines = lines[:n-1] // the file's final newline
		}
		progress := newProgress(streamsOf(ctx).stderr, len(lines))
		total := ImportSummary{Refusals: []Refusal{}}
		for start := 0; start < len(lines); {
			end, size, records := start, 0, 0
			for end < len(lines) && records < sites.MaxImportBatch && size+len(lines[end]) < importBatchBytes {
				size += len(lines[end]) + 1
				if len(bytes.TrimSpace(lines[end])) > 0 {
					records++
				}
				end++
			}
			if end == start { // one line longer than a batch: let the server refuse it
				end++
			}
			sum, err := c.Import(ctx, bytes.Join(lines[start:end], []byte("\n")))
			if err != nil {
				progress.done()
				return output{}, fmt.Errorf("lines %d-%d: %w (the lines before were imported; importing the file again skips them)", start+1, end, err)
			}
			total.Created += sum.Created
			total.Updated += sum.Updated
			total.Unchanged += sum.Unchanged
			total.Refused += sum.Refused
			for _, r := range sum.Refusals {
				r.Line += start
				total.Refusals = append(total.Refusals, r)
			}
			start = end
			progress.set(start)
		}
		progress.done()
		out := output{value: total, failed: total.Refused > 0,
			msg: fmt.Sprintf("created %d, updated %d, unchanged %d, refused %d", total.Created, total.Updated, total.Unchanged, total.Refused)}
		if total.Refused > 0 {
			out.header = []string{"LINE", "KIND", "ID", "STATUS", "REASON"}
			for _, r := range total.Refusals {
				out.rows = append(out.rows, []string{strconv.Itoa(r.Line), r.Kind, r.ID, strconv.Itoa(r.Status), r.Detail})
			}
		}
		return out, nil
	}
}

// readInput reads a file, or stdin for "-".
func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return b, nil
}

func exportCmd(fs *flag.FlagSet) runFunc {
	var path string
	fs.StringVar(&path, "output", "", "write to this file instead of stdout")
	return func(ctx context.Context, c *Client, _ []string) (output, error) {
		if path == "" {
			return output{}, c.Export(ctx, streamsOf(ctx).stdout)
		}
		f, err := os.Create(path)
		if err != nil {
			return output{}, err
		}
		lines := &lineCounter{w: bufio.NewWriter(f)}
		err = c.Export(ctx, lines)
		if err == nil {
			err = lines.w.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return output{}, err
		}
		return output{value: map[string]any{"records": lines.n, "file": path},
			msg: fmt.Sprintf("exported %d records to %s", lines.n, path)}, nil
	}
}

type lineCounter struct {
	w *bufio.Writer
	n int
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.n += bytes.Count(p, []byte("\n"))
	return l.w.Write(p)
}

// progress shows "importing: N/M lines (P%)" on a terminal; elsewhere
// (a pipe, a log file) it prints nothing.
type progress struct {
	w     io.Writer // nil: not a terminal
	total int
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{total: total}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		p.w = f
	}
	return p
}

func (p *progress) set(n int) {
	if p.w != nil && p.total > 0 {
		fmt.Fprintf(p.w, "\rimporting: %d/%d lines (%d%%)", n, p.total, n*100/p.total)
	}
}

func (p *progress) done() {
	if p.w != nil {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// isTerminal reports whether f is a character device: a terminal (or
// /dev/null, where the progress goes nowhere), not a pipe or a file.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
