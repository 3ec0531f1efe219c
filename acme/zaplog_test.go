package acme

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"go.uber.org/zap"
)

// TestSlogCoreWith: the fields of With and of the entry reach slog, each
// logger with its own, and a With that is never written converts nothing.
func TestSlogCoreWith(t *testing.T) {
	var buf bytes.Buffer
	zl := zap.New(slogCore{l: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	parent := zl.With(zap.String("a", "1"))
	two, three := parent.With(zap.String("b", "2")), parent.With(zap.String("b", "3"))
	two.Debug("not written", zap.String("c", "0"))
	two.Named("n").Info("first", zap.Int("c", 4))
	three.Warn("second")
	var got []map[string]any
	for line := range bytes.Lines(buf.Bytes()) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		delete(m, "time")
		got = append(got, m)
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "first", "a": "1", "b": "2", "c": 4.0, "logger": "n"},
		{"level": "WARN", "msg": "second", "a": "1", "b": "3"},
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("logged %s, want %s", gotJSON, wantJSON)
	}

	core := slogCore{l: slog.New(slog.DiscardHandler)}
	fields := []zap.Field{zap.String("server_name", "a.com"), zap.String("remote", "192.0.2.1:1234")}
	if n := testing.AllocsPerRun(100, func() { _ = core.With(fields) }); n > 2 {
		t.Errorf("With: %v allocations, want at most 2 (the fields and the core)", n)
	}
}
