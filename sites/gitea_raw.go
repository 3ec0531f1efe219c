package sites

// Reading files from Gitea's raw endpoint at a fixed commit.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

func (r *GiteaRepo) rawURL(commit, name string) string {
	return r.g.base + "/api/v1/repos/" + url.PathEscape(r.owner) + "/" + url.PathEscape(r.repo) + "/raw/" +
		escapePath(name) + "?ref=" + url.QueryEscape(commit)
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

func (r *GiteaRepo) rawRequest(ctx context.Context, commit, name string, offset int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.rawURL(commit, name), nil)
	if err != nil {
		return nil, err
	}
	if r.g.cfg.GiteaToken != "" {
		req.Header.Set("Authorization", "token "+r.g.cfg.GiteaToken)
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	return r.g.hc.Do(req)
}

// fetch reads one file at commit. Small files are read whole (and
// compressed once); larger ones are streamed from Gitea on each request.
func (r *GiteaRepo) fetch(ctx context.Context, commit, name string) (*File, error) {
	resp, err := r.rawRequest(ctx, commit, name, 0)
	if err != nil {
		return nil, upstreamError(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, ErrFileNotFound
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: raw %s: status %d", ErrUpstream, name, resp.StatusCode)
	}
	maxFile := r.g.cache.cfg.MaxCachedFile
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrUpstream, name, err)
	}
	modTime := r.g.now()
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		modTime = lm
	}
	// Gitea's ETag is the blob id: it stays the same across commits while the
	// file does not change, so visitors keep their cached copy.
	tag := strings.Trim(strings.TrimPrefix(resp.Header.Get("ETag"), "W/"), `"`)
	if tag == "" || strings.ContainsAny(tag, "\" \\") {
		tag = commit
	}
	// Content-Type from the extension: Gitea serves HTML as text/plain.
	if int64(len(body)) > maxFile {
		size := resp.ContentLength
		if size < 0 {
			return nil, fmt.Errorf("%w: %s: large file without a length", ErrUpstream, name)
		}
		f := newFile(name, size, modTime, tag, nil)
		f.open = func() (io.ReadSeekCloser, error) {
			return &rawReader{r: r, commit: commit, name: name, size: size}, nil
		}
		return f, nil
	}
	return newFile(name, int64(len(body)), modTime, tag, body), nil
}

// rawReader streams a large file from Gitea; Seek starts a ranged request.
type rawReader struct {
	r            *GiteaRepo
	commit, name string
	size, off    int64
	body         io.ReadCloser
}

func (rr *rawReader) Read(p []byte) (int, error) {
	if rr.body == nil {
		resp, err := rr.r.rawRequest(context.Background(), rr.commit, rr.name, rr.off)
		if err != nil {
			return 0, err
		}
		want := http.StatusOK
		if rr.off > 0 {
			want = http.StatusPartialContent
		}
		if resp.StatusCode != want {
			resp.Body.Close()
			return 0, fmt.Errorf("%w: raw %s: status %d", ErrUpstream, rr.name, resp.StatusCode)
		}
		rr.body = resp.Body
	}
	n, err := rr.body.Read(p)
	rr.off += int64(n)
	return n, err
}

func (rr *rawReader) Seek(offset int64, whence int) (int64, error) {
	if whence != io.SeekStart || offset < 0 || offset > rr.size {
		return rr.off, errors.New("rawReader: only absolute seeks within the file")
	}
	if rr.body != nil {
		rr.body.Close()
		rr.body = nil
	}
	rr.off = offset
	return offset, nil
}

func (rr *rawReader) Close() error {
	if rr.body != nil {
		return rr.body.Close()
	}
	return nil
}
