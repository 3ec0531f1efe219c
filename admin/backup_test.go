package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
)

// fileBackups hands out copies of one file's content, or err.
type fileBackups struct {
	content []byte
	err     error
}

func (f fileBackups) Backup(context.Context) (*os.File, error) {
	if f.err != nil {
		return nil, f.err
	}
	dir, err := os.MkdirTemp("", "backup-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "copy")
	if err := os.WriteFile(p, f.content, 0o600); err != nil {
		return nil, err
	}
	return os.Open(p)
}

func backupServer(t *testing.T, b Backups) *httptest.Server {
	t.Helper()
	reg, err := sites.New(context.Background(), storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Token: testToken}, reg, Options{
		Metrics: prometheus.NewRegistry(),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backups: b,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func TestBackupRoute(t *testing.T) {
	content := bytes.Repeat([]byte("tollgate backup bytes "), 50_000) // ~1 MiB
	tests := []struct {
		name    string
		backups Backups
		token   string
		want    int // status; 0: the body arrives whole
	}{
		{"streams the copy", fileBackups{content: content}, testToken, 0},
		{"needs the token", fileBackups{content: content}, "wrong-token-0123456789", http.StatusUnauthorized},
		{"no backups on this server", nil, testToken, http.StatusServiceUnavailable},
		{"the copy failed", fileBackups{err: errors.New("disk full")}, testToken, http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := backupServer(t, tt.backups)
			var got bytes.Buffer
			n, err := NewClient(srv.URL, tt.token).Backup(context.Background(), &got)
			if tt.want == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if n != int64(len(content)) || !bytes.Equal(got.Bytes(), content) {
					t.Fatalf("got %d bytes, want the %d of the copy", n, len(content))
				}
				return
			}
			var p *Problem
			if !errors.As(err, &p) || p.Status != tt.want {
				t.Fatalf("err %v, want a problem with status %d", err, tt.want)
			}
			if got.Len() != 0 {
				t.Fatalf("%d bytes written for a refused backup", got.Len())
			}
			if tt.want == http.StatusInternalServerError && bytes.Contains([]byte(p.Detail), []byte("disk full")) {
				t.Fatalf("an internal error's text reached the client: %q", p.Detail)
			}
		})
	}
}

// TestClientBackupCutShort: a body shorter than its Content-Length is an
// error, not a smaller backup.
func TestClientBackupCutShort(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.Write(make([]byte, 400))
		// the handler returns: net/http closes the connection short
	}))
	t.Cleanup(srv.Close)
	var got bytes.Buffer
	n, err := NewClient(srv.URL, testToken).Backup(context.Background(), &got)
	if err == nil {
		t.Fatalf("a cut transfer of %d of 1000 bytes was accepted", n)
	}
	if n != 400 {
		t.Fatalf("read %d bytes before the cut, want 400", n)
	}
}
