package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/sites"
)

// benchOrg owns every site; its plan "big" has no limits (0 = unlimited), so
// enforcement runs but never throttles.
const (
	benchOrg  = "bench"
	benchPlan = "big"
)

// tollgateAdmin is a running tollgate's operator API.
type tollgateAdmin struct {
	Addr   string
	client *admin.Client
	// token is the bearer token of the admin API; store the bbolt file.
	token, store string
}

// tollgateOptions are what differs between the tollgate instances.
type tollgateOptions struct {
	// MeterOff turns metering off ([meter] disabled).
	MeterOff bool
	// Pages, when set, serves {owner}.pagesDomain from this Gitea.
	Pages *giteaPages
	// TLS, when set, turns [server] https on with certificates on demand
	// from this CA, and attaches hostTLS to the static site. The plain
	// listener then redirects to HTTPS.
	TLS *tlsSpec
	// Certs, when set, turns [server] https on with the certificates of
	// this set, stored in tollgate's bbolt file before it starts (their CA,
	// memoryCertsCA, is never contacted).
	Certs *certSet
	// Reopen, when set, is the bbolt file of an earlier tollgate (stopped)
	// to start on: it already holds the base sites, so none are registered.
	Reopen string
	// ReadyTimeout bounds the wait for /readyz and the static site; 0 is
	// 15 s.
	ReadyTimeout time.Duration
	// Redis, when set, is [store] redis: the registry lives there.
	Redis string
}

// tollgateConfig is a minimal config: loopback listeners, a store in dir,
// metering on or off, Gitea pages when asked, warnings only in the log, and
// the admin API's per-token request limit off (the harness is the
// operator provisioning sites and timing writes, hundreds a second, which
// the limit exists to refuse to a runaway client; it is not what is
// measured). Everything else is the shipped default, which is what the
// benchmark is meant to measure.
func tollgateConfig(httpPort, adminPort, httpsPort int, token, dbPath string, o tollgateOptions) string {
	https := ""
	if o.TLS != nil || o.Certs != nil {
		https = fmt.Sprintf("https = \"127.0.0.1:%d\"\n", httpsPort)
	}
	redis := ""
	if o.Redis != "" {
		redis = fmt.Sprintf("redis = %q\n", o.Redis)
	}
	conf := fmt.Sprintf(`[server]
http = "127.0.0.1:%d"
%sadmin = "127.0.0.1:%d"
admin_token = %q
admin_requests_per_second = -1

[store]
path = %q
%s
[meter]
disabled = %t

[log]
level = "warn"
`, httpPort, https, adminPort, token, dbPath, redis, o.MeterOff)
	if g := o.Pages; g != nil {
		// revalidate 1h: no background branch checks during the runs.
		conf += fmt.Sprintf(`
[sites]
pages_domain = %q
gitea_url = %q
gitea_token = %q
revalidate = "1h"
`, pagesDomain, g.URL, g.Token)
	}
	if t := o.TLS; t != nil {
		conf += fmt.Sprintf(`
[acme]
ca = %q
ca_root = %q
email = "peerbench@example.test"
`, t.CA.DirectoryURL, t.CA.APIRootsFile)
	}
	if o.Certs != nil {
		conf += fmt.Sprintf("\n[acme]\nca = %q\n", memoryCertsCA)
	}
	return conf
}

// startTollgate starts bin/tollgate with its own config and store under dir,
// waits for /readyz, registers the benchmark org, the static and proxied
// sites and their domains through the admin API, and waits until the static
// site answers: over plain HTTP, or with o.TLS over HTTPS as hostTLS, which
// makes tollgate obtain its certificate then (the warm-up request). Extra
// sites of s are not registered here (see registerSites). With o.Reopen it
// starts on that store and registers nothing.
func startTollgate(ctx context.Context, ps *procs, cpu cpuPlan, bin, name, dir string, s siteSpec, o tollgateOptions) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return retryStart(ctx, func(attempt int) (*server, error) {
		ports, err := freePorts(3)
		if err != nil {
			return nil, err
		}
		token := randomToken()
		conf := filepath.Join(dir, fmt.Sprintf("tollgate-%d.toml", attempt))
		db := filepath.Join(dir, fmt.Sprintf("tollgate-%d.db", attempt))
		if o.Reopen != "" {
			db = o.Reopen
		}
		readyTimeout := cmp.Or(o.ReadyTimeout, 15*time.Second)
		if err := os.WriteFile(conf, []byte(tollgateConfig(ports[0], ports[1], ports[2], token, db, o)), 0o600); err != nil {
			return nil, err
		}
		if o.Certs != nil {
			if err := o.Certs.seed(ctx, db); err != nil {
				return nil, err
			}
		}
		argv := append(append([]string{}, cpu.Server...), bin, "serve", "--config", conf)
		p, err := ps.start(name, argv, nil, filepath.Join(dir, "tollgate.log"))
		if err != nil {
			return nil, err
		}
		srv := &server{Name: name, Addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), proc: p}
		adminAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
		if err := waitReady(ctx, p, "http://"+adminAddr+"/readyz", adminAddr, readyTimeout); err != nil {
			p.stop()
			return nil, err
		}
		srv.admin = &tollgateAdmin{Addr: adminAddr, client: admin.NewClient(adminAddr, token), token: token, store: db}
		if o.Reopen == "" { // else the store holds the base sites already
			if err := srv.admin.registerBase(ctx, s, o.TLS != nil); err != nil {
				p.stop()
				return nil, fmt.Errorf("%s: registering: %w", name, err)
			}
		}
		if o.Pages != nil {
			if err := srv.admin.claimPagesOwner(ctx); err != nil {
				p.stop()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		switch {
		case o.Certs != nil:
			// The plain listener redirects to HTTPS, and the sites with
			// certificates are registered later: /readyz above sufficed.
			srv.TLSAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
		case o.TLS != nil:
			srv.TLSAddr, srv.tls = fmt.Sprintf("127.0.0.1:%d", ports[2]), o.TLS
			err = waitTLSReady(ctx, srv, tlsIssueTimeout)
		default:
			err = waitReady(ctx, p, srv.url("/index.html"), hostStatic, readyTimeout)
		}
		if err != nil {
			p.stop()
			return nil, err
		}
		return srv, nil
	})
}

// registerBase registers what every server serves: static.bench from the
// generated directory and proxied.bench to the shared upstream; withTLS also
// attaches hostTLS to the static site.
func (a *tollgateAdmin) registerBase(ctx context.Context, s siteSpec, withTLS bool) error {
	c := a.client
	if _, _, err := c.PutPlan(ctx, sites.Plan{Name: benchPlan}); err != nil {
		return err
	}
	if _, err := c.CreateOrg(ctx, admin.OrgCreate{ID: benchOrg, Name: "peerbench", Plan: benchPlan}); err != nil {
		return err
	}
	for _, site := range []struct {
		id, host string
		src      sites.Source
	}{
		{"static", hostStatic, sites.Source{Type: sites.SourceDir, Path: s.Dir}},
		{"proxied", hostProxied, sites.Source{Type: sites.SourceUpstream, URL: "http://" + s.Upstream}},
	} {
		if _, err := c.CreateSite(ctx, benchOrg, admin.SiteCreate{ID: site.id, Source: site.src}); err != nil {
			return fmt.Errorf("site %s: %w", site.id, err)
		}
		if _, err := c.AttachDomain(ctx, site.id, admin.DomainAttach{Domain: site.host}); err != nil {
			return fmt.Errorf("domain %s: %w", site.host, err)
		}
	}
	if withTLS {
		if _, err := c.AttachDomain(ctx, "static", admin.DomainAttach{Domain: hostTLS}); err != nil {
			return fmt.Errorf("domain %s: %w", hostTLS, err)
		}
	}
	return nil
}

// registerSites adds n static sites serving dir, each with the domain
// extraHost(i), one admin call after another over one keep-alive connection.
func (a *tollgateAdmin) registerSites(ctx context.Context, dir string, n int) error {
	for i := range n {
		id := fmt.Sprintf("s%05d", i)
		src := sites.Source{Type: sites.SourceDir, Path: dir}
		if _, err := a.client.CreateSite(ctx, benchOrg, admin.SiteCreate{ID: id, Source: src}); err != nil {
			return fmt.Errorf("site %s: %w", id, err)
		}
		if _, err := a.client.AttachDomain(ctx, id, admin.DomainAttach{Domain: extraHost(i)}); err != nil {
			return fmt.Errorf("domain %s: %w", extraHost(i), err)
		}
	}
	return nil
}

// tollgateVersion is the output of `tollgate version`.
func tollgateVersion(bin string) string {
	b, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
