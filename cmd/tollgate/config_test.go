package main

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestExampleConfigParsesAndValidates(t *testing.T) {
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "example-token-0123456789")
	cfg, err := LoadConfig("../../configs/tollgate.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.HTTP != ":8080" || cfg.Server.Admin != "127.0.0.1:9180" || cfg.Store.Path == "" {
		t.Fatalf("unexpected values: %+v", cfg.Server)
	}
	// Every key the example shows equals the default the code applies, so the
	// example documents the real defaults.
	var written Config
	if _, err := toml.DecodeFile("../../configs/tollgate.example.toml", &written); err != nil {
		t.Fatal(err)
	}
	var defaults Config
	defaults.Defaults()
	defaults.Server.AdminToken = written.Server.AdminToken
	defaults.Store.Path = written.Store.Path
	if written.Proxy.TrustedProxies == nil {
		t.Fatal("example should show trusted_proxies")
	}
	written.Proxy.TrustedProxies = nil
	if len(written.Billing.Plans) != 0 || len(written.Billing.Hooks) != 0 {
		t.Fatal("the example's plans and hooks are empty lists (examples are in comments)")
	}
	written.Billing.Plans, written.Billing.Hooks = nil, nil
	if !reflect.DeepEqual(written, defaults) {
		t.Fatalf("example and defaults differ:\nexample  %+v\ndefaults %+v", written, defaults)
	}
}

func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../configs/tollgate.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	var written map[string]map[string]any
	if _, err := toml.Decode(string(b), &written); err != nil {
		t.Fatal(err)
	}
	for section, fields := range tomlKeys(Config{}) {
		for _, f := range fields {
			if _, ok := written[section][f]; !ok {
				t.Errorf("configs/tollgate.example.toml lacks [%s] %s", section, f)
			}
		}
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tollgate.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secretFile, []byte("from-a-file-0123456789\n"), 0o600)
	t.Setenv("TG_TEST_TOKEN", "from-the-env-0123456789")
	tests := []struct {
		name, body string
		env        string // TOLLGATE_ADMIN_TOKEN
		wantToken  string
		wantErrs   []string
	}{
		{name: "literal", body: "[server]\nadmin_token = \"literal-token-0123456789\"\n", wantToken: "literal-token-0123456789"},
		{name: "env secret", body: "[server]\nadmin_token = \"env:TG_TEST_TOKEN\"\n", wantToken: "from-the-env-0123456789"},
		{name: "file secret", body: "[server]\nadmin_token = \"file:" + secretFile + "\"\n", wantToken: "from-a-file-0123456789"},
		{name: "environment override", body: "[server]\nadmin_token = \"literal-token-0123456789\"\n", env: "override-token-0123456789", wantToken: "override-token-0123456789"},
		{name: "missing env", body: "[server]\nadmin_token = \"env:TG_NOT_SET\"\n", wantErrs: []string{"server.admin_token", "TG_NOT_SET"}},
		{name: "missing file", body: "[server]\nadmin_token = \"file:/nonexistent/x\"\n", wantErrs: []string{"server.admin_token"}},
		{name: "no token", body: "", wantErrs: []string{"server.admin_token"}},
		{name: "every bad key named", body: `
[server]
http = "nonsense"
admin = "127.0.0.1"
admin_token = "short"
shutdown_timeout = "-1s"
gc_percent = -1
[log]
level = "loud"
format = "xml"
[limits]
max_header_bytes = 10
max_body_bytes = -1
[proxy]
trusted_proxies = ["not-an-ip"]
upstream_max_conns = -3
[sites]
cache_bytes = -1
[typo]
x = 1
`, wantErrs: []string{"server.http", "server.admin:", "server.admin_token", "server.shutdown_timeout", "server.gc_percent", "log.level", "log.format",
			"limits.max_header_bytes", "limits.max_body_bytes", "proxy.trusted_proxies", "proxy.upstream_max_conns", "sites.cache_bytes", "typo.x: unknown key"}},
		{name: "unknown key in section", body: "[server]\nadmin_token = \"literal-token-0123456789\"\nhtpp = \":80\"\n", wantErrs: []string{"server.htpp: unknown key"}},
		{name: "bad https and acme", body: "[server]\nadmin_token = \"literal-token-0123456789\"\nhttps = \"443\"\n[acme]\nca = \"ftp://ca\"\nwildcard_key = \"k.pem\"\nowner_ttl = \"-1s\"\n",
			wantErrs: []string{"server.https", "acme.ca", "acme.wildcard_cert", "acme.owner_ttl"}},
		{name: "api_tls without https and api_host", body: "[server]\nadmin_token = \"literal-token-0123456789\"\napi = \"nohostport\"\napi_tls = true\n",
			wantErrs: []string{"server.api:", "server.api_tls: needs server.api and server.https", "server.api_tls: needs server.api_host"}},
		{name: "bad toml", body: "[server\n", wantErrs: []string{"toml"}},
		{name: "bad duration", body: "[server]\nadmin_token = \"literal-token-0123456789\"\nshutdown_timeout = \"soon\"\n", wantErrs: []string{"soon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TOLLGATE_ADMIN_TOKEN", tt.env)
			cfg, err := LoadConfig(writeConfig(t, tt.body))
			if len(tt.wantErrs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Server.AdminToken != tt.wantToken {
					t.Fatalf("token %q; want %q", cfg.Server.AdminToken, tt.wantToken)
				}
				if cfg.Server.ShutdownTimeout != 30*time.Second || cfg.Server.GCPercent != defaultGCPercent || cfg.Limits.MaxHeaderBytes != 16<<10 {
					t.Fatal("defaults not applied")
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %q:\n%v", want, err)
				}
			}
		})
	}
}

// TestApplyGCPercent: server.gc_percent sets the collector's target, unless
// the GOGC environment variable did.
func TestApplyGCPercent(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	t.Setenv("GOGC", "")
	ServerConfig{GCPercent: 50}.applyGCPercent()
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("without GOGC: target %d, want 50", got)
	}
	t.Setenv("GOGC", "100")
	ServerConfig{GCPercent: 50}.applyGCPercent()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC=100: target %d, want GOGC's 100", got)
	}
}
