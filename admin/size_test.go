package admin

import (
	"math"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "16MiB", want: 16 << 20},
		{in: "500MB", want: 500_000_000},
		{in: "128KiB", want: 128 << 10},
		{in: "2kb", want: 2000},
		{in: "1.5GiB", want: 3 << 29},
		{in: " 3 TB ", want: 3e12},
		{in: "42B", want: 42},
		{in: "8PiB", want: 8 << 50},
		{in: "7.99PiB", wantErr: true}, // not a whole number of bytes
		{in: "9223372036854775807", want: math.MaxInt64},
		{in: "9223372036854775808", wantErr: true},
		{in: "8192PiB", wantErr: true},
		{in: "", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "GiB", wantErr: true},
		{in: "1.5", wantErr: true},
		{in: "1.2.3MB", wantErr: true},
		{in: ".MB", wantErr: true},
		{in: "1e3", wantErr: true},
		{in: "10 parsecs", wantErr: true},
		{in: "1/2GiB", wantErr: true},
		{in: "1" + string(make([]byte, 60)), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseSize(%q) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1KiB"},
		{1 << 30, "1GiB"},
		{16 << 20, "16MiB"},
		{500_000_000, "500MB"},
		{1e15, "1PB"},
		{1 << 20 * 3 / 2, "1536KiB"},
		{123456789, "123456789"},
		{-5, "-5"},
	}
	for _, tt := range tests {
		if got := formatSize(tt.in); got != tt.want {
			t.Errorf("formatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzParseSize checks parseSize never panics and that what it accepts
// formats back to the same value.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1GiB", "500MB", "1.5GiB", "0", "9223372036854775807", "x", "1..2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("parseSize(%q) = %d < 0", s, n)
		}
		back, err := parseSize(formatSize(n))
		if err != nil || back != n {
			t.Fatalf("round trip of %d via %q: %d, %v", n, formatSize(n), back, err)
		}
	})
}
