package content

// The path rule: which file of a site a URL path serves.

import (
	"errors"
	"strings"
)

// Tree is a site's files as Resolve sees them. Names are relative to the
// site root, without a leading slash. *DirSource's directories and the Gitea
// source's commits implement it.
type Tree interface {
	// File returns the regular file at name, or ErrFileNotFound when there
	// is none: missing, a directory, or anything else that is not a
	// regular file.
	File(name string) (*File, error)
	// IsDir reports whether name is a directory.
	IsDir(name string) (bool, error)
}

// Resolve returns the file t serves at urlPath (already cleaned by the HTTP
// layer), by the one rule of every source: nginx's with clean URLs
// (try_files $uri $uri.html $uri/):
//
//	/       → index.html
//	/a/     → a/index.html, else ErrFileNotFound
//	/a      → a, else a.html, else ErrIsDir when a is a directory (the proxy
//	          redirects to /a/), else ErrFileNotFound
//
// A path the visitor may not see (servable) is answered before t is asked
// anything; IsDir is asked only when neither file exists.
func Resolve(t Tree, urlPath string) (*File, error) {
	rel, err := servable(urlPath)
	if err != nil {
		return nil, err
	}
	if rel == "" || strings.HasSuffix(rel, "/") {
		return t.File(rel + "index.html")
	}
	for _, name := range [...]string{rel, rel + ".html"} {
		if f, err := t.File(name); !errors.Is(err, ErrFileNotFound) {
			return f, err
		}
	}
	dir, err := t.IsDir(rel)
	switch {
	case err != nil:
		return nil, err
	case dir:
		return nil, ErrIsDir
	}
	return nil, ErrFileNotFound
}

// servable checks a URL path every content source serves from and returns
// it relative to the site root: absolute, no NUL (ErrBadPath), and no
// hidden file or directory (.git, .env, ...; ErrFileNotFound), .well-known
// being the one exception (RFC 8615).
func servable(urlPath string) (string, error) {
	if len(urlPath) == 0 || urlPath[0] != '/' || strings.IndexByte(urlPath, 0) >= 0 {
		return "", ErrBadPath
	}
	rel := urlPath[1:]
	for _, seg := range strings.Split(rel, "/") {
		if seg == ".." || (strings.HasPrefix(seg, ".") && seg != ".well-known") {
			return "", ErrFileNotFound
		}
	}
	return rel, nil
}
