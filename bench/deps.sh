#!/usr/bin/env bash
# Installs the peers of `make bench` (Debian packages), only those missing:
# nginx, caddy, wrk, and nghttp2-client for h2load (the HTTPS rows).
# Idempotent: with all four present it only prints their versions. The HTTPS
# rows' test CA (Pebble) is a Go module built into peerbench: nothing to
# install for it.
#
# Debian may start the nginx and Caddy services on :80 right after installing
# them. peerbench runs its own instances on free loopback ports and never
# needs :80, but an idle extra server is noise on the benchmark machine, so
# the services of the packages installed here (never of ones already present)
# are stopped: with systemctl when there is one, else by nginx's pid file.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for tool in nginx:nginx caddy:caddy wrk:wrk h2load:nghttp2-client; do
	command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done

if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "bench-deps: installing ${missing[*]}"
	$sudo apt-get update -qq || true
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	for svc in nginx caddy; do
		[[ " ${missing[*]} " == *" $svc "* ]] || continue
		if command -v systemctl >/dev/null && $sudo systemctl stop "$svc" 2>/dev/null; then
			echo "bench-deps: stopped the $svc service apt started"
		elif [ "$svc" = nginx ] && [ -s /run/nginx.pid ]; then
			$sudo kill "$(cat /run/nginx.pid)" 2>/dev/null && echo "bench-deps: stopped the nginx apt started" || true
		fi
	done
fi

echo "bench-deps: $(nginx -v 2>&1); caddy $(caddy version | cut -d' ' -f1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(h2load --version)"
