package content

// Sites served from a local directory.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"
)

// DirSource serves a site's files from a local directory through the shared
// cache. Nothing outside the directory is ever opened: every look-up goes
// through an os.Root, which refuses ".." and symlinks that leave the root.
//
// The root is opened for each look-up that reaches the disk (a miss, a
// revalidation, the open of a file too large to cache) and closed after it,
// not held: a node of a hundred thousand directory sites holds no
// descriptor for them (it held one each, and ran out). A cache hit opens
// nothing. A large file's descriptor stays valid after its root is closed.
type DirSource struct {
	path  string
	cache *Cache
	space *Space
}

// OpenDir makes dir a content source cached in c. It fails when dir is not
// a directory now; one that goes away later answers each request with the
// error until it is back.
func (c *Cache) OpenDir(dir string) (*DirSource, error) {
	fi, err := os.Stat(dir)
	if err == nil && !fi.IsDir() {
		err = fmt.Errorf("%s: not a directory", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("content: open site directory: %w", err)
	}
	return &DirSource{path: dir, cache: c, space: c.NewSpace()}, nil
}

// Close drops the source's cached files.
func (d *DirSource) Close() error {
	d.cache.DropSpace(d.space)
	return nil
}

// openRoot opens the site's directory for one look-up.
func (d *DirSource) openRoot() (*os.Root, error) {
	root, err := os.OpenRoot(d.path)
	if err != nil {
		return nil, fmt.Errorf("content: open site directory: %w", err)
	}
	return root, nil
}

// Get returns the file served at urlPath (already cleaned by the HTTP layer)
// by the path rule (Resolve). A hit within the revalidation delay costs one
// map look-up and no I/O.
func (d *DirSource) Get(urlPath []byte) (*File, error) { return d.GetAt(urlPath, time.Now()) }

// GetAt is Get with the caller's idea of now (the request's start time), so
// the request path reads the clock once.
func (d *DirSource) GetAt(urlPath []byte, at time.Time) (*File, error) {
	now := at.UnixNano()
	e := d.cache.Lookup(d.space, urlPath)
	if e != nil {
		if now-e.checked.Load() < int64(d.cache.cfg.DirRevalidate) {
			d.cache.hits.Add(1)
			return e.file, e.err
		}
		if e.file != nil && e.name != "" && d.unchanged(e) {
			e.checked.Store(now)
			d.cache.hits.Add(1)
			return e.file, nil
		}
	}
	d.cache.misses.Add(1)
	key := string(urlPath)
	root, err := d.openRoot()
	if err != nil {
		return nil, err // not cached: the directory may come back
	}
	defer root.Close()
	f, err := Resolve(&dirTree{d: d, root: root}, key)
	if err != nil && !errors.Is(err, ErrFileNotFound) && !errors.Is(err, ErrIsDir) {
		if e != nil && e.file != nil && outOfDescriptors(err) {
			// The file changed but cannot be read now: the cached copy is
			// served, and read again at the next check.
			return e.file, nil
		}
		return nil, err // an I/O error is not cached
	}
	name := ""
	if f != nil {
		name = f.name
	}
	d.cache.insert(d.space, key, name, f, err, now)
	return f, err
}

// unchanged reports whether e's file is still what the cache holds. When
// the directory cannot be opened for a reason other than its absence (out
// of descriptors: EMFILE, ENFILE), the cached file is served as it is and
// checked again next time, as it was while the directory stayed open; so
// is a changed file that cannot be read again for lack of descriptors
// (GetAt).
func (d *DirSource) unchanged(e *Entry) bool {
	root, err := d.openRoot()
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR)
	}
	defer root.Close()
	fi, err := root.Stat(e.name)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == e.file.Size && fi.ModTime().Equal(e.file.mtime)
}

// outOfDescriptors reports whether err is the process (EMFILE) or the
// system (ENFILE) out of file descriptors.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// dirTree is the directory as Resolve sees it, for one look-up. It
// remembers its first stats, so that IsDir of a name File looked at costs
// no second stat.
type dirTree struct {
	d     *DirSource
	root  *os.Root
	stats [2]struct {
		name string
		fi   fs.FileInfo
		err  error
	}
	n int
}

func (t *dirTree) stat(name string) (fs.FileInfo, error) {
	for _, s := range t.stats[:t.n] {
		if s.name == name {
			return s.fi, s.err
		}
	}
	fi, err := t.root.Stat(name)
	if t.n < len(t.stats) {
		t.stats[t.n].name, t.stats[t.n].fi, t.stats[t.n].err = name, fi, err
		t.n++
	}
	return fi, err
}

// File reads the regular file name (following symlinks within the root).
func (t *dirTree) File(name string) (*File, error) {
	fi, err := t.stat(name)
	switch {
	case err != nil && absent(err):
		return nil, ErrFileNotFound
	case err != nil:
		return nil, fmt.Errorf("content: stat: %w", err)
	case !fi.Mode().IsRegular():
		return nil, ErrFileNotFound
	}
	return t.d.read(t.root, name, fi)
}

// IsDir reports whether name is a directory (following symlinks within the
// root).
func (t *dirTree) IsDir(name string) (bool, error) {
	fi, err := t.stat(name)
	switch {
	case err != nil && absent(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("content: stat: %w", err)
	}
	return fi.IsDir(), nil
}

func (d *DirSource) read(root *os.Root, name string, fi fs.FileInfo) (*File, error) {
	tag := fmt.Sprintf("%x-%x", fi.ModTime().UnixNano(), fi.Size())
	if fi.Size() > d.cache.cfg.MaxCachedFile {
		f := newFile(name, fi.Size(), fi.ModTime(), tag, nil)
		f.open = func() (io.ReadSeekCloser, error) {
			root, err := d.openRoot()
			if err != nil {
				return nil, err
			}
			defer root.Close() // the file stays open
			return root.Open(name)
		}
		return f, nil
	}
	fh, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("content: open: %w", err)
	}
	defer fh.Close()
	body := make([]byte, fi.Size())
	if _, err := io.ReadFull(fh, body); err != nil {
		return nil, fmt.Errorf("content: read: %w", err) // changed under us: not cached, retried next time
	}
	return newFile(name, fi.Size(), fi.ModTime(), tag, body), nil
}

// absent reports whether a stat error means "no such file" as far as a
// visitor is concerned: missing, not a directory, a name too long, a symlink
// loop, unreadable, or (os.Root's "path escapes from parent") leaving the root.
func absent(err error) bool {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission),
		errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ENAMETOOLONG),
		errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EINVAL):
		return true
	}
	return strings.Contains(err.Error(), "escapes")
}

// maxUsageFiles bounds the walk of DirUsage.
const maxUsageFiles = 1 << 20

// DirUsage returns the bytes of the regular files under dir (symlinks are
// not followed, hidden files count: they occupy the disk all the same). It
// stops with an error past a million entries.
func DirUsage(dir string) (int64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	var total int64
	n := 0
	err = fs.WalkDir(root.FS(), ".", func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // an unreadable entry counts as nothing
		}
		if n++; n > maxUsageFiles {
			return fmt.Errorf("content: more than %d entries under %s", maxUsageFiles, dir)
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total, err
}
