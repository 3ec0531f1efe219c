package content

import (
	"strings"
	"testing"
)

func TestRedirects(t *testing.T) {
	r, err := ParseRedirects([]byte(`
# comment
/old            /new
/temp           /elsewhere   302
/blog/*         /posts/:splat 301
/app/*          /index.html  200
/docs           https://docs.example.org/ 308
/bad            /x           404
/forced         /y           301!
relative        /z
/a*b            /c
/proto          //evil.example/
/rw             https://x.example/ 200
/x  /y  301 extra
`))
	if err == nil || r.Len() != 5 {
		t.Fatalf("parsed %d rules, err %v; want 5 rules and an error naming the bad lines", r.Len(), err)
	}
	for _, bad := range []string{"line 8", "line 9", "line 10", "line 11", "line 12", "line 13", "line 14"} {
		if !strings.Contains(err.Error(), bad) {
			t.Errorf("error does not name %s: %v", bad, err)
		}
	}
	tests := []struct {
		path, to string
		status   int
	}{
		{"/old", "/new", 301},
		{"/old/", "/new", 301},
		{"/temp", "/elsewhere", 302},
		{"/blog/2026/hello", "/posts/2026/hello", 301},
		{"/blog", "/posts/", 301},
		{"/app/settings", "/index.html", 200},
		{"/docs", "https://docs.example.org/", 308},
		{"/nothing", "", 0},
		{"/blog//evil.example", "/posts//evil.example", 301},
		{"/blog/x\r\nSet-Cookie: a=b", "", 0},
		{"/oldish", "", 0},
	}
	for _, tt := range tests {
		to, st, ok := r.Match([]byte(tt.path))
		if to != tt.to || st != tt.status || ok != (tt.status != 0) {
			t.Errorf("Match(%q) = %q %d %v; want %q %d", tt.path, to, st, ok, tt.to, tt.status)
		}
	}
}

func TestRedirectsBounds(t *testing.T) {
	huge := strings.Repeat("/a /b\n", MaxRedirectRules+50)
	r, err := ParseRedirects([]byte(huge))
	if r.Len() != MaxRedirectRules || err == nil {
		t.Fatalf("%d rules, %v; want the cap and an error", r.Len(), err)
	}
	big := strings.Repeat("#", MaxRedirectsBytes+100)
	if _, err := ParseRedirects([]byte(big)); err == nil {
		t.Fatal("no error for an oversized file")
	}
	long := "/x " + strings.Repeat("y", MaxRedirectsBytes*2)
	if r, _ := ParseRedirects([]byte(long)); r.Len() != 0 {
		t.Fatal("a line over the size limit was kept")
	}
}

func FuzzRedirects(f *testing.F) {
	f.Add("/a /b\n/c/* /d/:splat 302\n", "/c/x")
	f.Add("/app/* /index.html 200", "/app/")
	f.Fuzz(func(t *testing.T, file, path string) {
		r, _ := ParseRedirects([]byte(file))
		if r.Len() > MaxRedirectRules {
			t.Fatalf("%d rules", r.Len())
		}
		to, st, ok := r.Match([]byte(path))
		if !ok {
			return
		}
		if st == 200 && !strings.HasPrefix(to, "/") {
			t.Fatalf("a rewrite to %q", to)
		}
		if strings.HasPrefix(to, "//") || strings.ContainsAny(to, "\r\n\x00") {
			t.Fatalf("unsafe target %q for %q", to, path)
		}
	})
}
