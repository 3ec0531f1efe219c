package gitea

// Reading files from Gitea's raw endpoint at a fixed commit, and asking
// whether a path is a directory.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tollgate-edge/tollgate/sites/content"
)

// fileURL is the API URL of name at commit under endpoint ("raw",
// "contents-ext").
func (r *Repo) fileURL(endpoint, commit, name string) string {
	return r.g.base + "/api/v1/repos/" + url.PathEscape(r.owner) + "/" + url.PathEscape(r.repo) + "/" + endpoint + "/" +
		escapePath(name) + "?ref=" + url.QueryEscape(commit)
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

func (r *Repo) rawRequest(ctx context.Context, commit, name string, offset int64) (*http.Response, error) {
	return r.request(ctx, r.fileURL("raw", commit, name), offset)
}

// request GETs u from offset on, with the token when there is one.
func (r *Repo) request(ctx context.Context, u string, offset int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
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
func (r *Repo) fetch(ctx context.Context, commit, name string) (*content.File, error) {
	resp, err := r.rawRequest(ctx, commit, name, 0)
	if err != nil {
		return nil, upstreamError(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, content.ErrFileNotFound
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: raw %s: status %d", ErrUpstream, name, resp.StatusCode)
	}
	maxFile := r.g.cache.MaxFile()
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
		return content.NewStream(content.Meta{Name: name, Size: size, ModTime: modTime, Tag: tag}, func() (io.ReadSeekCloser, error) {
			return &rawReader{r: r, commit: commit, name: name, size: size}, nil
		}), nil
	}
	return content.NewFile(content.Meta{Name: name, ModTime: modTime, Tag: tag}, body), nil
}

// rawReader streams a large file from Gitea; Seek starts a ranged request.
type rawReader struct {
	r            *Repo
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

// isDir reports whether name is a directory at commit. Gitea's contents-ext
// endpoint (Gitea 1.24 on) lists a directory under dir_contents; without
// includes it reads no blob and no history, however large the directory.
// A Gitea without the endpoint answers 404 to everything: until one answer
// has shown that the endpoint exists, a 404 is checked as older Gitea
// allows, by whether name/index.html exists (so there a directory without
// one is not found).
func (r *Repo) isDir(ctx context.Context, commit, name string) (bool, error) {
	resp, err := r.request(ctx, r.fileURL("contents-ext", commit, name), 0)
	if err != nil {
		return false, upstreamError(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		r.g.contentsExt.Store(true)
		return listsDir(resp.Body)
	case http.StatusNotFound:
		if r.g.contentsExt.Load() {
			return false, nil
		}
		_, err := r.fetch(ctx, commit, name+"/index.html")
		if errors.Is(err, content.ErrFileNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	return false, fmt.Errorf("%w: contents of %s: status %d", ErrUpstream, name, resp.StatusCode)
}

// listsDir reports whether a contents-ext answer lists a directory
// ({"dir_contents": [...]}) rather than describing a file, a symlink or a
// submodule ({"file_contents": {...}}). It reads up to the first value
// that tells.
func listsDir(body io.Reader) (bool, error) {
	dec := json.NewDecoder(body)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false, fmt.Errorf("%w: contents-ext: not a JSON object (%v)", ErrUpstream, err)
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return false, fmt.Errorf("%w: contents-ext: %v", ErrUpstream, err)
		}
		val, err := dec.Token()
		switch {
		case err != nil:
			return false, fmt.Errorf("%w: contents-ext: %v", ErrUpstream, err)
		case key == "dir_contents" && val == json.Delim('['):
			return true, nil
		case val == json.Delim('{') || val == json.Delim('['):
			return false, nil // file_contents, or a field of a later Gitea
		}
	}
	return false, nil
}
