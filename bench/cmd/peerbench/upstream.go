package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/tollgate-edge/tollgate/internal/proctest"
)

// upstreamBodySize is the size of every upstream answer.
const upstreamBodySize = 1 << 10

// upstreamSubcommand makes peerbench run as the shared proxy upstream. It is
// a separate process so that it can be pinned away from the server under
// test and stopped by PID like every other server.
const upstreamSubcommand = "upstream"

// serveUpstream answers every request with the same 1 KiB body, keep-alive
// on, until the process is stopped.
func serveUpstream(addr string) error {
	body := bytes.Repeat([]byte("u"), upstreamBodySize)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}

// startUpstream starts the upstream process on a free port and waits for it.
func startUpstream(ctx context.Context, ps *procs, cpu cpuPlan, tmp string) (addr string, err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return retryStart(ctx, func(attempt int) (string, error) {
		port, err := proctest.FreePort()
		if err != nil {
			return "", err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		argv := append(append([]string{}, cpu.Upstream...), exe, upstreamSubcommand, addr)
		p, err := ps.start("upstream", argv, nil, filepath.Join(tmp, "upstream.log"))
		if err != nil {
			return "", err
		}
		if err := waitReady(ctx, p, "http://"+addr+"/", addr, 15*time.Second); err != nil {
			p.stop()
			return "", err
		}
		return addr, nil
	})
}
