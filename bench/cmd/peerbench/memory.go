package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"
)

// memoryResult is one server's resident memory (VmRSS) in the memory
// scenario; each figure comes from a fresh process.
type memoryResult struct {
	Server string `json:"server"`
	// BaseRSS: the benchmark's two sites only, right after start.
	BaseRSS int64 `json:"base_rss_bytes"`
	// SitesRSS: with Sites more sites, one domain each (tollgate: registered
	// through the admin API; peers: server blocks in the config).
	SitesRSS int64 `json:"sites_rss_bytes"`
	// TouchedRSS: after one GET / to every one of those hosts.
	TouchedRSS int64 `json:"touched_rss_bytes"`
	Sites      int   `json:"sites"`
	// Setup is how long registering (tollgate) or starting (peers) took.
	Setup time.Duration `json:"setup_ns"`
	// SitesRatio and TouchedRatio: tollgate ÷ this server (lower is leaner).
	SitesRatio   *float64 `json:"sites_ratio,omitempty"`
	TouchedRatio *float64 `json:"touched_ratio,omitempty"`
	Problems     []string `json:"problems,omitempty"`
}

// runMemory measures tollgate with n sites registered at run time against
// nginx and Caddy configured with the same n server names. Each server runs
// only for its measurement, pinned like the others.
func (b *bench) runMemory(ctx context.Context, sc scenario) scenarioResult {
	if sc.Certs {
		return b.runMemoryCerts(ctx, sc)
	}
	res := scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusMeasured, Base: srvTollgate}
	n := b.cfg.Sites
	res.Memory = []memoryResult{b.memoryTollgate(ctx, n), b.memoryPeer(ctx, srvNginx, n), b.memoryPeer(ctx, srvCaddy, n)}
	base := res.Memory[0]
	for i := range res.Memory[1:] {
		m := &res.Memory[i+1]
		m.SitesRatio = ratioOf(base.SitesRSS, m.SitesRSS)
		m.TouchedRatio = ratioOf(base.TouchedRSS, m.TouchedRSS)
	}
	for _, m := range res.Memory {
		b.logf("%s %-8s base %s, %d sites %s, touched %s (setup %s) %v", sc.ID, m.Server,
			fmtBytes(m.BaseRSS), n, fmtBytes(m.SitesRSS), fmtBytes(m.TouchedRSS), m.Setup.Round(time.Millisecond), m.Problems)
	}
	return res
}

func ratioOf(a, b int64) *float64 {
	if a <= 0 || b <= 0 {
		return nil
	}
	r := float64(a) / float64(b)
	return &r
}

func (b *bench) memoryTollgate(ctx context.Context, n int) memoryResult {
	m := memoryResult{Server: srvTollgate, Sites: n}
	dir := filepath.Join(b.tmp, "memory-tollgate")
	srv, err := startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, "tollgate-memory", dir, b.site, tollgateOptions{})
	if err != nil {
		m.Problems = append(m.Problems, err.Error())
		return m
	}
	defer srv.proc.stop()
	m.BaseRSS = b.rss(&m, srv)
	start := time.Now()
	if err := srv.admin.registerSites(ctx, b.site.Dir, n); err != nil {
		m.Problems = append(m.Problems, "registering: "+err.Error())
		return m
	}
	m.Setup = time.Since(start)
	m.SitesRSS = b.rss(&m, srv)
	b.touch(ctx, &m, srv, n)
	return m
}

// memoryPeer starts a fresh peer with the base config, then another with n
// more server names, each measured right after it answers.
func (b *bench) memoryPeer(ctx context.Context, name string, n int) memoryResult {
	return b.measurePeer(ctx, name, "memory", n, nil, func(m *memoryResult, srv *server) { b.touch(ctx, m, srv, n) })
}

// measurePeer starts peer name with the plain base config (BaseRSS), then a
// fresh process with n extra sites, edited by withExtra (nil: none), whose
// RSS it reads once it answers (SitesRSS) and after touch (TouchedRSS).
func (b *bench) measurePeer(ctx context.Context, name, label string, n int, withExtra func(*siteSpec), touch func(*memoryResult, *server)) memoryResult {
	m := memoryResult{Server: name, Sites: n}
	start := startNginx
	if name == srvCaddy {
		start = startCaddy
	}
	for _, extra := range []int{0, n} {
		spec := b.site
		spec.ExtraSites = extra
		spec.TLS = nil // the base figures are of plain-HTTP configs
		if extra > 0 && withExtra != nil {
			withExtra(&spec)
		}
		dir := filepath.Join(b.tmp, fmt.Sprintf("%s-%s-%d", label, name, extra))
		t0 := time.Now()
		srv, err := start(ctx, b.ps, b.cpu, b.tools[name], name+"-"+label, dir, spec)
		if err != nil {
			m.Problems = append(m.Problems, err.Error())
			return m
		}
		if extra == 0 {
			m.BaseRSS = b.rss(&m, srv)
		} else {
			m.Setup = time.Since(t0)
			m.SitesRSS = b.rss(&m, srv)
			touch(&m, srv)
		}
		srv.proc.stop()
	}
	return m
}

// touch sends GET / to each of the n extra hosts once and then reads RSS.
func (b *bench) touch(ctx context.Context, m *memoryResult, srv *server, n int) {
	for i := range n {
		r := request{Path: "/", Host: extraHost(i), WantStatus: http.StatusOK, WantBytes: len(indexHTML)}
		if err := check(ctx, srv, r); err != nil {
			m.Problems = append(m.Problems, fmt.Sprintf("touching %s: %v", extraHost(i), err))
			return
		}
	}
	m.TouchedRSS = b.rss(m, srv)
}

func (b *bench) rss(m *memoryResult, srv *server) int64 {
	v, err := rssBytes(srv.proc.pid())
	if err != nil {
		m.Problems = append(m.Problems, err.Error())
	}
	return v
}
