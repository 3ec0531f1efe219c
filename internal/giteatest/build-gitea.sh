#!/usr/bin/env bash
# Builds Gitea from the Go module proxy once and caches it, with the source's
# options/ templates/ public/ (a non-bindata build reads them at run time),
# under $HOME/.cache/tollgate/gitea-$VERSION/. Idempotent: a cached binary that
# runs and reports $VERSION is kept. The build happens in a temp dir next to
# the cache and is moved into place with one rename, so an interrupted build
# leaves no half cache.
# The first build takes ~4 minutes and ~2.5 GB of Go caches.
set -euo pipefail

VERSION=${GITEA_VERSION:-1.26.1}
GO=${GO:-go}
CACHE_ROOT=${TOLLGATE_CACHE:-$HOME/.cache/tollgate}
DEST=$CACHE_ROOT/gitea-$VERSION

# The binary must run and report the version (a stale or broken cache is rebuilt).
if [ -x "$DEST/gitea" ] && "$DEST/gitea" --version 2>/dev/null | grep -q "version $VERSION "; then
	"$DEST/gitea" --version
	exit 0
fi

mkdir -p "$CACHE_ROOT"
WORK=$(mktemp -d "$CACHE_ROOT/.gitea-$VERSION.build.XXXXXX")
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT

echo "building gitea v$VERSION (first time: ~4 minutes, ~2.5 GB of Go caches)" >&2
# go.mod of gitea has replace directives: `go install` refuses it, so build from
# a writable copy of the module directory.
modjson=$(cd "$WORK" && GOFLAGS=-mod=mod "$GO" mod download -json "code.gitea.io/gitea@v$VERSION")
moddir=$(printf '%s\n' "$modjson" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [ -z "$moddir" ] || [ ! -d "$moddir" ]; then
	echo "go mod download gave no module directory:" >&2
	printf '%s\n' "$modjson" >&2
	exit 1
fi
cp -r "$moddir" "$WORK/src"
chmod -R u+w "$WORK/src"
TAGS='sqlite sqlite_unlock_notify'
(cd "$WORK/src" && CGO_ENABLED=1 GOFLAGS='-mod=mod -buildvcs=false' "$GO" build -tags "$TAGS" \
	-ldflags "-s -w -X 'main.Version=$VERSION' -X 'main.Tags=$TAGS'" -o gitea .)

mkdir "$WORK/out"
mv "$WORK/src/gitea" "$WORK/out/gitea"
cp -r "$WORK/src/options" "$WORK/src/templates" "$WORK/src/public" "$WORK/out/"
"$WORK/out/gitea" --version

# A stale cache (binary missing, broken or another version) is moved aside first; rename is
# atomic within one file system.
if [ -e "$DEST" ]; then
	mv "$DEST" "$WORK/old"
fi
mv "$WORK/out" "$DEST"
echo "gitea cached in $DEST" >&2
