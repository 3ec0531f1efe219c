# syntax=docker/dockerfile:1
# tollgate container image (docs/install.md, "Docker").
#
#   docker build -t tollgate:$(git describe --tags --always --dirty) \
#     --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse HEAD) .
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ... (the
# builder cross-compiles; no emulation needed).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
# setcap (libcap2-bin) marks the binary so a non-root user may bind :80/:443.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS=linux
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT" \
      -o /out/tollgate ./cmd/tollgate \
 && setcap cap_net_bind_service=+ep /out/tollgate \
 && mkdir -p /out/state /out/etc

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot
# (65532); no shell, no package manager, no setcap (hence the builder above).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.source="https://github.com/tollgate-edge/tollgate" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$COMMIT"
# Owned by root, mode 0755: no chown on the binary (a chown would drop the
# security.capability attribute that setcap wrote; BuildKit copies it along).
COPY --from=build --chmod=0755 /out/tollgate /usr/local/bin/tollgate
# The bbolt file ([store] path = "/var/lib/tollgate/tollgate.db"), writable by
# nonroot; a named volume inherits this ownership on first use.
COPY --from=build --chown=65532:65532 --chmod=0700 /out/state /var/lib/tollgate
# Mount the configuration here (read-only is fine).
COPY --from=build --chmod=0755 /out/etc /etc/tollgate
USER 65532:65532
WORKDIR /var/lib/tollgate
VOLUME /var/lib/tollgate
# public HTTP, public HTTPS, admin API (/readyz, /metrics; keep it private)
EXPOSE 80 443 9180
# There is no shell or HTTP client in the image for a HEALTHCHECK: probe
# http://ADMIN:9180/readyz from outside (docs/install.md).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.toml"]
