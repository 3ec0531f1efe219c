package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// The floor is the least a server built on fasthttp (tollgate's HTTP/1.1
// library, fixed by the project) does for the static, 304 and proxy rows:
// fasthttp's own connection loop with a handler that only answers. Files
// come from a map filled at start, a 304 is one header comparison, and a
// proxied request is handed to a fasthttp HostClient as it came. No routing
// table, no timeouts or deadlines, no metering, no request checks, no
// metrics. It is not a server anyone should run; it is a measuring stick:
// tollgate ÷ floor says how much of the gap to nginx is tollgate's own
// work, and floor ÷ nginx how much of it any fasthttp server carries on
// this machine (its connection loop reads the socket once more per request
// than nginx, and Go's scheduler runs between requests).
const (
	srvFloor = "fasthttp-floor"
	// floorSubcommand makes peerbench run as the floor: floor ADDR
	// UPSTREAM DIR.
	floorSubcommand = "floor"
)

// floorFile is one file the floor serves.
type floorFile struct {
	body, etag, ctype []byte
}

// serveFloor answers on addr: hostProxied through a HostClient to upstream,
// everything else from the files of dir (GET, with a strong ETag and 304 on
// If-None-Match), until the process is stopped.
func serveFloor(addr, upstream, dir string) error {
	s, err := newFloor(upstream, dir)
	if err != nil {
		return err
	}
	return s.ListenAndServe(addr)
}

// newFloor is the floor's server for upstream and the files of dir.
func newFloor(upstream, dir string) (*fasthttp.Server, error) {
	files, err := floorFiles(dir)
	if err != nil {
		return nil, err
	}
	hc := &fasthttp.HostClient{Addr: upstream}
	proxied := []byte(hostProxied)
	notFound := []byte("not found\n")
	// The write buffer is tollgate's (proxy/server.go): fasthttp's default
	// 4 KiB would send a 4 KiB file's head and body in two writes.
	s := &fasthttp.Server{Name: "floor", WriteBufferSize: 32 << 10, Handler: func(ctx *fasthttp.RequestCtx) {
		if bytes.Equal(ctx.Host(), proxied) {
			if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			}
			return
		}
		f := files[string(ctx.Path())]
		if f == nil {
			ctx.Response.SetStatusCode(fasthttp.StatusNotFound)
			ctx.Response.SetBodyRaw(notFound)
			return
		}
		ctx.Response.Header.SetBytesV("ETag", f.etag)
		ctx.Response.Header.SetContentTypeBytes(f.ctype)
		if bytes.Equal(ctx.Request.Header.Peek("If-None-Match"), f.etag) {
			ctx.Response.SetStatusCode(fasthttp.StatusNotModified)
			return
		}
		ctx.Response.SetBodyRaw(f.body)
	}}
	return s, nil
}

// floorFiles reads every regular file of dir, by "/name".
func floorFiles(dir string) (map[string]*floorFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := map[string]*floorFile{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ctype := "text/plain; charset=utf-8"
		if strings.HasSuffix(e.Name(), ".html") {
			ctype = "text/html; charset=utf-8"
		}
		etag := `"` + strconv.Itoa(len(b)) + "-" + strconv.Itoa(len(files)) + `"`
		files["/"+e.Name()] = &floorFile{body: b, etag: []byte(etag), ctype: []byte(ctype)}
	}
	return files, nil
}

// startFloor runs peerbench's floor subcommand on the server core.
func startFloor(ctx context.Context, ps *procs, cpu cpuPlan, name, dir string, s siteSpec) (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return retryStart(ctx, func(attempt int) (*server, error) {
		ports, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
		argv := append(append([]string{}, cpu.Server...), exe, floorSubcommand, addr, s.Upstream, s.Dir)
		return startAndWait(ctx, ps, name, argv, nil, filepath.Join(dir, "floor.log"), ports, siteSpec{Dir: s.Dir})
	})
}
