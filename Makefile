# tollgate: see README.md. Every target installs what it needs, idempotently.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DEMO    := .demo

.PHONY: all build run deps test test-short lint fuzz bench bench-go clean release

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/tollgate ./cmd/tollgate

# Serves the demo site on the embedded default (one bbolt file under .demo/).
run: build
	@mkdir -p $(DEMO)/site
	@test -f $(DEMO)/site/index.html || cp -r configs/demo/. $(DEMO)/site/
	@test -f $(DEMO)/tollgate.toml || { \
	  tok=$$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n'); \
	  printf '[server]\nhttp = ":8080"\nadmin = "127.0.0.1:9180"\nadmin_token = "%s"\n\n[store]\npath = "%s/tollgate.db"\n' \
	    "$$tok" "$(CURDIR)/$(DEMO)" > $(DEMO)/tollgate.toml; }
	@echo "config: $(DEMO)/tollgate.toml (admin token inside); Ctrl-C stops"
	exec bin/tollgate serve --config $(DEMO)/tollgate.toml --demo $(DEMO)/site

# What the tests need beside Go: a real redis-server (Debian). Idempotent: it
# installs only what is missing. The tests start their own servers on free
# loopback ports; the Debian service, if it autostarts, is left alone.
deps: gitea stripe-mock h2spec openssl chromium
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version | head -1

# A real Gitea v1.26.1 for the end-to-end tests (internal/giteatest), built from
# the Go module proxy once and cached in ~/.cache/tollgate/gitea-1.26.1/ (first
# time ~4 minutes and ~2.5 GB of Go caches; afterwards it only checks the binary).
.PHONY: gitea
gitea:
	@GO=$(GO) internal/giteatest/build-gitea.sh

# stripe-mock v0.190.0 (Stripe's API fixtures server) for the billing tests,
# installed from the Go module proxy into ~/.cache/tollgate/bin once.
STRIPE_MOCK := $(HOME)/.cache/tollgate/bin/stripe-mock
.PHONY: stripe-mock
stripe-mock:
	@test -x $(STRIPE_MOCK) || { echo "installing stripe-mock v0.190.0"; \
	  GOBIN=$(HOME)/.cache/tollgate/bin $(GO) install github.com/stripe/stripe-mock@v0.190.0; }
	@echo "stripe-mock $$($(STRIPE_MOCK) -version 2>&1 | head -1)"

# h2spec v2.2.1 (HTTP/2 conformance suite) for cmd/tollgate's TestH2Spec,
# installed from the Go module proxy into ~/.cache/tollgate/bin once. The
# test runs it under unshare -m (util-linux, as root) with a private
# /etc/hosts.
H2SPEC := $(HOME)/.cache/tollgate/bin/h2spec
.PHONY: h2spec
h2spec:
	@test -x $(H2SPEC) || { echo "installing h2spec v2.2.1"; \
	  GOBIN=$(HOME)/.cache/tollgate/bin $(GO) install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible; }
	@test -x $(H2SPEC) && echo "h2spec $(H2SPEC)"

# openssl (Debian) for acme's TestTLSConfigWithOpenSSL (s_client probes of
# the public listener's cipher suites and groups), installed when missing.
.PHONY: openssl
openssl:
	@command -v openssl >/dev/null || { \
	  echo "installing openssl"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
	@openssl version

# Headless Chromium and certutil (Debian chromium, libnss3-tools) for
# cmd/tollgate's TestBrowserH2OneConnection, installed with apt-get only when
# missing.
.PHONY: chromium
chromium:
	@{ command -v chromium >/dev/null && command -v certutil >/dev/null; } || { \
	  echo "installing chromium libnss3-tools"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libnss3-tools >/dev/null; }
	@chromium --version

# Installs what the tests need, then runs every test.
test: deps lint
	$(GO) test -race -count=1 ./...
	# Allocation counts and heap bounds are only meaningful without -race (files tagged !race).
	$(GO) test -count=1 -run 'Allocs|HeapPerSite' ./proxy ./sites/... ./billing/access ./cmd/tollgate

# The hermetic inner loop: no Redis, Gitea, stripe-mock, Pebble, Chromium,
# h2spec or openssl; the tests that need one skip, saying which
# ("needs redis-server; -short"). Under a minute on 2 cores.
test-short:
	$(GO) test -short -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Short fuzzing of what strangers control (host names, paths).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzAppendHostKey -fuzztime 20s ./sites
	$(GO) test -run '^$$' -fuzz FuzzStaticPath -fuzztime 20s ./proxy
	$(GO) test -run '^$$' -fuzz FuzzPublicListener -fuzztime 20s ./proxy
	$(GO) test -run '^$$' -fuzz FuzzH2StrictConn -fuzztime 20s ./proxy
	$(GO) test -run '^$$' -fuzz FuzzRedirects -fuzztime 20s ./sites/content
	$(GO) test -run '^$$' -fuzz FuzzParseDomains -fuzztime 20s ./sites/gitea
	$(GO) test -run '^$$' -fuzz FuzzDecide -fuzztime 20s ./acme

# tollgate beside nginx and Caddy, same machine, same content (bench/README.md).
# Tune with BENCH_ROUNDS, BENCH_DURATION, BENCH_ONLY...; results in bench/results/.
bench: bench-deps build gitea
	$(GO) run ./bench/cmd/peerbench

# The peers of make bench (nginx, caddy, wrk, h2load), installed with apt-get
# only when missing.
.PHONY: bench-deps
bench-deps:
	@bench/deps.sh

# Go microbenchmarks, comparable with benchstat.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./... | tee bench-go.txt

clean:
	rm -rf bin dist bench-go.txt

# Static release binaries for Linux into dist/ (rebuilt from scratch), named
# tollgate-$(VERSION)-linux-$(ARCH), plus dist/SHA256SUMS (sha256sum -c).
# Override the version with make release VERSION=v1.2.3.
RELEASE_ARCHS ?= amd64 arm64
release:
	@rm -rf dist && mkdir -p dist
	@set -e; for arch in $(RELEASE_ARCHS); do \
	  out=dist/tollgate-$(VERSION)-linux-$$arch; \
	  echo "build $$out"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/tollgate; \
	done
	@cd dist && sha256sum tollgate-$(VERSION)-linux-* > SHA256SUMS
	@echo "dist/SHA256SUMS:" && cat dist/SHA256SUMS
