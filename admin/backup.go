package admin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
)

// Backups takes copies of the node's store for GET /v1/backup. The serve
// command's nodeBackups implements it.
type Backups interface {
	// Backup returns a consistent copy of the store as a bbolt file (see
	// store.BackupMeta), open for reading at its start. The caller closes
	// it; nothing else is left on disk.
	Backup(ctx context.Context) (*os.File, error)
}

// contentTypeBackup is the media type of GET /v1/backup.
const contentTypeBackup = "application/vnd.tollgate.backup"

// backup streams a fresh copy of the store. The copy is complete before the
// first byte is sent, so a failure is still a problem, and Content-Length
// lets the client tell a cut transfer from a whole one.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) error {
	if s.backups == nil {
		return fmt.Errorf("%w: this server takes no backups", errNotConfig)
	}
	f, err := s.backups.Backup(r.Context())
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeBackup)
	h.Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	h.Set("Content-Disposition", `attachment; filename="tollgate-backup.db"`)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, f); err != nil {
		// Too late for a problem: the client sees a short body.
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "admin: backup not sent whole",
			slog.String("remote", r.RemoteAddr), slog.Any("err", err))
	}
	return nil
}

// Backup writes the node's backup (GET /v1/backup) to w and returns its
// size. A transfer cut short is an error. It has no overall timeout (a
// backup can be large): bound it with ctx.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/backup", nil)
	if err != nil {
		return 0, fmt.Errorf("admin client: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", contentTypeBackup+", "+contentTypeProblem)
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("admin client: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, responseProblem(resp.StatusCode, b)
	}
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, fmt.Errorf("admin client: reading the backup after %d bytes: %w", n, err)
	}
	return n, nil
}
