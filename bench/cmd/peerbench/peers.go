package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Host names every server routes by; wrk sends them as the Host header.
const (
	hostStatic  = "static.bench"
	hostProxied = "proxied.bench"
)

// extraHost is the name of the i-th site of the memory scenario.
func extraHost(i int) string { return fmt.Sprintf("s%05d.sites.bench", i) }

// server is one running server under test.
type server struct {
	Name string
	// Addr is the public plain-HTTP listener, host:port.
	Addr string
	// TLSAddr is the HTTPS listener serving hostTLS, host:port; "" when the
	// server has none.
	TLSAddr string
	proc    *proc
	// tls is the CA of TLSAddr's certificate; leaf is the certificate the
	// last HTTPS check verified (DER), for the handshake client.
	tls  *tlsSpec
	leaf []byte
	// admin is set for tollgate only.
	admin *tollgateAdmin
	// gitea is set for gitea-raw only, which has no proc of its own here.
	gitea *giteaPages
}

func (s *server) url(path string) string { return "http://" + s.Addr + path }

// siteSpec is what every server is configured with.
type siteSpec struct {
	Dir      string // the generated static site
	Upstream string // host:port of the shared upstream
	// ExtraSites more static sites (extraHost(i), same Dir), for memory.
	ExtraSites int
	// ExtraCerts, when set, serves the extra sites over HTTPS (on the TLS
	// port, HTTP/1.1) with their certificates instead of plain HTTP.
	ExtraCerts *certSet
	// TLS, when set, gives nginx and Caddy an HTTPS listener serving
	// hostTLS from Dir with its certificate files.
	TLS *tlsSpec
}

// peerTools are the commands make bench needs beside Go, with the Debian
// package that provides each.
var peerTools = []struct{ cmd, pkg string }{
	{"nginx", "nginx"}, {"caddy", "caddy"}, {"wrk", "wrk"}, {"h2load", "nghttp2-client"},
}

// checkPeers fails, naming make bench-deps, if a peer is missing. nginx lives
// in /usr/sbin, which a non-root PATH may lack.
func checkPeers() (paths map[string]string, err error) {
	paths = map[string]string{}
	var missing []string
	for _, t := range peerTools {
		p, err := exec.LookPath(t.cmd)
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/" + t.cmd); serr == nil {
				p, err = "/usr/sbin/"+t.cmd, nil
			}
		}
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", t.cmd, t.pkg))
			continue
		}
		paths[t.cmd] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing: %s; run `make bench-deps` (it installs them with apt-get)",
			strings.Join(missing, ", "))
	}
	return paths, nil
}

// peerVersions asks each tool for its version, for the machine description.
func peerVersions(paths map[string]string) map[string]string {
	out := map[string]string{}
	for name, args := range map[string][]string{
		"nginx": {"-v"}, "caddy": {"version"}, "wrk": {"-v"}, "h2load": {"--version"},
	} {
		b, _ := exec.Command(paths[name], args...).CombinedOutput() // wrk -v exits 1
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		line, _, _ = strings.Cut(line, " Copyright") // wrk
		out[name] = strings.TrimSpace(line)
	}
	return out
}

// nginxConfig is nginx tuned as an operator would for static files and a
// keep-alive upstream: one worker (one core, like the Go servers), no access
// log, sendfile, open_file_cache, no per-connection request cap, gzip off.
// Every path is under prefix. With s.TLS, tlsPort serves hostTLS over TLS
// 1.2 and 1.3 (nginx 1.22 leaves 1.3 out by default) with h2 and http/1.1.
func nginxConfig(prefix string, port, tlsPort int, s siteSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  gzip off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  open_file_cache max=20000 inactive=60s;
  open_file_cache_valid 60s;
  server_names_hash_max_size 65536;
  server_names_hash_bucket_size 128;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  types { text/html html; text/plain txt; }
  default_type application/octet-stream;
  upstream bench_up { server %[4]s; keepalive 64; }
  server { listen 127.0.0.1:%[2]d default_server; server_name %[5]s; root %[3]s; }
  server {
    listen 127.0.0.1:%[2]d; server_name %[6]s;
    location / { proxy_pass http://bench_up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
`, prefix, port, s.Dir, s.Upstream, hostStatic, hostProxied)
	if t := s.TLS; t != nil {
		fmt.Fprintf(&b, `  server {
    listen 127.0.0.1:%d ssl http2 default_server; server_name %s; root %s;
    ssl_certificate %s; ssl_certificate_key %s; ssl_protocols TLSv1.2 TLSv1.3;
  }
`, tlsPort, hostTLS, s.Dir, t.CertFile, t.KeyFile)
	}
	for i := range s.ExtraSites {
		if c := s.ExtraCerts; c != nil {
			fmt.Fprintf(&b, "  server { listen 127.0.0.1:%d ssl; server_name %s; root %s; ssl_certificate %s; ssl_certificate_key %s; ssl_protocols TLSv1.2 TLSv1.3; }\n",
				tlsPort, extraHost(i), s.Dir, c.certFile(i), c.keyFile(i))
			continue
		}
		fmt.Fprintf(&b, "  server { listen 127.0.0.1:%d; server_name %s; root %s; }\n", port, extraHost(i), s.Dir)
	}
	b.WriteString("}\n")
	return b.String()
}

// caddyConfig is Caddy's own idiom for the same sites: file_server and
// reverse_proxy (upstream keep-alive is its default), no admin endpoint, no
// automatic HTTPS, bound to loopback. With s.TLS, tlsPort serves hostTLS
// with its certificate files (tls directive), h1 and h2 only: HTTP/3 would
// add a UDP listener and an Alt-Svc header no client here uses.
func caddyConfig(port, tlsPort int, s siteSpec) string {
	var b strings.Builder
	protocols := ""
	if s.TLS != nil || s.ExtraCerts != nil {
		protocols = "\n\tservers {\n\t\tprotocols h1 h2\n\t}"
	}
	fmt.Fprintf(&b, `{
	admin off
	auto_https off%[6]s
	log {
		level WARN
	}
}
http://%[3]s:%[1]d {
	bind 127.0.0.1
	root * %[2]s
	file_server
}
http://%[4]s:%[1]d {
	bind 127.0.0.1
	reverse_proxy %[5]s
}
`, port, s.Dir, hostStatic, hostProxied, s.Upstream, protocols)
	if t := s.TLS; t != nil {
		fmt.Fprintf(&b, "https://%s:%d {\n\tbind 127.0.0.1\n\ttls %s %s\n\troot * %s\n\tfile_server\n}\n",
			hostTLS, tlsPort, t.CertFile, t.KeyFile, s.Dir)
	}
	for i := range s.ExtraSites {
		if c := s.ExtraCerts; c != nil {
			fmt.Fprintf(&b, "https://%s:%d {\n\tbind 127.0.0.1\n\ttls %s %s\n\troot * %s\n\tfile_server\n}\n",
				extraHost(i), tlsPort, c.certFile(i), c.keyFile(i), s.Dir)
			continue
		}
		fmt.Fprintf(&b, "http://%s:%d {\n\tbind 127.0.0.1\n\troot * %s\n\tfile_server\n}\n", extraHost(i), port, s.Dir)
	}
	return b.String()
}

// startNginx writes the config under dir and starts nginx with -p dir.
func startNginx(ctx context.Context, ps *procs, cpu cpuPlan, bin, name, dir string, s siteSpec) (*server, error) {
	for _, d := range []string{"tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	return retryStart(ctx, func(attempt int) (*server, error) {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConfig(dir, ports[0], ports[1], s)), 0o644); err != nil {
			return nil, err
		}
		argv := append(append([]string{}, cpu.Server...), bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
		return startAndWait(ctx, ps, name, argv, nil, filepath.Join(dir, "stderr.log"), ports, s)
	})
}

// startCaddy writes a Caddyfile under dir and runs caddy with its data and
// config directories there too.
func startCaddy(ctx context.Context, ps *procs, cpu cpuPlan, bin, name, dir string, s siteSpec) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return retryStart(ctx, func(attempt int) (*server, error) {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(conf, []byte(caddyConfig(ports[0], ports[1], s)), 0o644); err != nil {
			return nil, err
		}
		env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"),
			"XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
		argv := append(append([]string{}, cpu.Server...), bin, "run", "--config", conf, "--adapter", "caddyfile")
		return startAndWait(ctx, ps, name, argv, env, filepath.Join(dir, "caddy.log"), ports, s)
	})
}

// startTimeout allows for parsing thousands of server blocks.
func startTimeout(s siteSpec) time.Duration {
	return 15*time.Second + time.Duration(s.ExtraSites)*10*time.Millisecond
}

// startAndWait starts argv and waits until the static site answers 200 on
// ports[0] and, with s.TLS, hostTLS on ports[1] over HTTPS. A server that
// fails to come up is stopped.
func startAndWait(ctx context.Context, ps *procs, name string, argv, env []string, logPath string, ports []int, s siteSpec) (*server, error) {
	p, err := ps.start(name, argv, env, logPath)
	if err != nil {
		return nil, err
	}
	srv := &server{Name: name, Addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), proc: p}
	err = waitReady(ctx, p, srv.url("/index.html"), hostStatic, startTimeout(s))
	if s.ExtraCerts != nil {
		srv.TLSAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
	}
	if err == nil && s.TLS != nil {
		srv.TLSAddr, srv.tls = fmt.Sprintf("127.0.0.1:%d", ports[1]), s.TLS
		err = waitTLSReady(ctx, srv, startTimeout(s))
	}
	if err != nil {
		p.stop()
		return nil, err
	}
	return srv, nil
}
