package sites

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeDomain(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "Example.COM.", want: "example.com"},
		{in: " shop.example.org ", want: "shop.example.org"},
		{in: "Bücher.Example", want: "xn--bcher-kva.example"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "demo.localhost", want: "demo.localhost"},
		{in: "", bad: true},
		{in: ".", bad: true},
		{in: "a..b", bad: true},
		{in: "example.com:8080", bad: true},
		{in: "10.0.0.1", bad: true},
		{in: "[::1]", bad: true},
		{in: "*.example.com", bad: true},
		{in: "exa mple.com", bad: true},
		{in: "-lead.example", bad: true},
		{in: strings.Repeat("a", 64) + ".com", bad: true},
		{in: strings.Repeat("abcdefghi.", 26) + "com", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeDomain(tt.in)
			if tt.bad {
				if !errors.Is(err, ErrBadHost) {
					t.Fatalf("NormalizeDomain(%q) = %q, %v; want ErrBadHost", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeDomain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestAppendHostKey(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "example.com", want: "example.com"},
		{in: "EXAMPLE.com:8080", want: "example.com"},
		{in: "example.com.", want: "example.com"},
		{in: "example.com.:443", want: "example.com"},
		{in: "Bücher.example", want: "xn--bcher-kva.example"},
		{in: "[::1]:8080", want: "[::1]"},
		{in: "127.0.0.1:80", want: "127.0.0.1"},
		{in: "", bad: true},
		{in: ":8080", bad: true},
		{in: "a..b", bad: true},
		{in: "exa mple.com", bad: true},
		{in: "evil.com/x", bad: true},
		{in: "host:port", bad: true},
		{in: "host:123456", bad: true},
		{in: "[::1", bad: true},
		{in: "[zz]", bad: true},
		{in: "a\x00b", bad: true},
		{in: strings.Repeat("a", 64) + ".com", bad: true},
		{in: strings.Repeat("a.", 130), bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := AppendHostKey(nil, []byte(tt.in))
			if tt.bad {
				if err == nil {
					t.Fatalf("AppendHostKey(%q) = %q; want an error", tt.in, got)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("AppendHostKey(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestAppendHostKeyAllocs(t *testing.T) {
	host := []byte("Shop.Example.COM:8080")
	var buf [MaxHostLen + 8]byte
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := AppendHostKey(buf[:0], host); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("AppendHostKey allocates %.1f times per call; want 0", allocs)
	}
}

// FuzzAppendHostKey checks that any Host header either fails cleanly or gives
// a key that is a fixed point: lower case, no port, and normalizing it again
// changes nothing. A key that is a domain name also passes NormalizeDomain.
func FuzzAppendHostKey(f *testing.F) {
	for _, s := range []string{"example.com", "EXAMPLE.com:80", "[::1]:1", "Bücher.example", "a..b", "x.", ":", "\x00", "xn--bcher-kva.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		key, err := AppendHostKey(nil, []byte(host))
		if err != nil {
			return
		}
		if len(key) == 0 || len(key) > MaxHostLen+2 {
			t.Fatalf("key %q of length %d", key, len(key))
		}
		again, err := AppendHostKey(nil, key)
		if err != nil || string(again) != string(key) {
			t.Fatalf("not a fixed point: %q -> %q -> %q, %v", host, key, again, err)
		}
		if strings.ToLower(string(key)) != string(key) && key[0] != '[' {
			t.Fatalf("key %q is not lower case", key)
		}
		if key[0] != '[' && strings.IndexByte(string(key), ':') >= 0 {
			t.Fatalf("key %q keeps a port", key)
		}
	})
}
