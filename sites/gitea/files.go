package gitea

// A repository's files, served by the path rule of every source.

import (
	"context"
	"errors"
	"time"

	"github.com/tollgate-edge/tollgate/sites/content"
)

// Get returns the file served at urlPath (a path inside the repository,
// starting with "/") by the path rule of every source (content.Resolve), at
// the time of the source's clock (Options.Now).
func (r *Repo) Get(urlPath []byte) (*content.File, error) { return r.GetAt(urlPath, r.g.now()) }

// GetAt is Get with the caller's idea of now, as content.DirSource.GetAt.
func (r *Repo) GetAt(urlPath []byte, at time.Time) (*content.File, error) {
	st, err := r.current()
	if err != nil {
		return nil, err
	}
	if st.missing {
		return nil, content.ErrFileNotFound
	}
	if e := r.g.cache.Lookup(st.space, urlPath); e != nil {
		// Files of a commit never change; only remembered misses expire
		// (the raw endpoint can 404 a file for a moment after a push). An
		// expired miss is still the answer: it is checked again in the
		// background, once per NegativeTTL.
		if e.RecheckDue(at, r.g.cfg.NegativeTTL) {
			go r.recheckMiss(st, string(urlPath), at)
		}
		r.g.cache.CountHit()
		return e.Result()
	}
	r.g.cache.CountMiss()
	ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
	defer cancel()
	key := string(urlPath)
	v, err, _ := r.g.sf.Do("file:"+st.commit+":"+r.owner+"/"+r.repo+":"+key, func() (any, error) {
		// A flight that just ended may have cached it between our look-up
		// and this one.
		if e := r.g.cache.Lookup(st.space, urlPath); e != nil {
			if f, _ := e.Result(); f != nil {
				return f, nil
			}
		}
		f, err := r.load(ctx, st.commit, key)
		if cacheable(err) {
			r.g.cache.Insert(st.space, key, f, err, at)
		}
		return f, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*content.File), nil
}

// recheckMiss loads key at st's commit again for a remembered miss that
// expired; on error the miss stays until its next expiry.
func (r *Repo) recheckMiss(st *repoState, key string, at time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), r.g.cfg.GiteaTimeout)
	defer cancel()
	f, err := r.load(ctx, st.commit, key)
	if cacheable(err) {
		r.g.cache.Insert(st.space, key, f, err, at)
	}
}

// cacheable reports whether a load's answer is remembered: a file or a
// miss, not a failure to ask Gitea.
func cacheable(err error) bool {
	return err == nil || errors.Is(err, content.ErrFileNotFound) || errors.Is(err, content.ErrIsDir)
}

// load resolves urlPath at commit by the path rule, with raw fetches.
func (r *Repo) load(ctx context.Context, commit, urlPath string) (*content.File, error) {
	return content.Resolve(commitTree{ctx: ctx, r: r, commit: commit}, urlPath)
}

// commitTree is the repository at one commit as content.Resolve sees it,
// for one load: ctx bounds its calls to Gitea.
type commitTree struct {
	ctx    context.Context
	r      *Repo
	commit string
}

// File reads name from the raw endpoint (raw.go: fetch).
func (t commitTree) File(name string) (*content.File, error) { return t.r.fetch(t.ctx, t.commit, name) }

// IsDir asks Gitea whether name is a directory (raw.go: isDir).
func (t commitTree) IsDir(name string) (bool, error) { return t.r.isDir(t.ctx, t.commit, name) }
