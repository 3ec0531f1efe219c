package redistest

import (
	"os"
	"path/filepath"
)

// RestartEmpty stops the server and starts it again on the same port with
// nothing: as a Redis without persistence (or whose files were lost) comes
// back after a restart.
func (s *Server) RestartEmpty() {
	s.t.Helper()
	s.Stop()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		s.t.Fatalf("redistest: restart empty: %v", err)
	}
	for _, e := range entries { // appendonlydir/, and a dump.rdb if one was written
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			s.t.Fatalf("redistest: restart empty: %v", err)
		}
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart empty: %v", err)
	}
}
