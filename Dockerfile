# syntax=docker/dockerfile:1
#
# Holdfast container image: a Rust builder stage and a slim Debian runtime stage that
# holds only the binary, CA certificates and conf/.
#
#   docker build -t holdfast .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9080:9080 -v holdfast-data:/var/lib/holdfast holdfast
#
# README.md "Container" shows how to mount your own config. tests/dockerfile.rs checks
# this file's structure and runs its entrypoint and health check against the real binary.

# Builder and runtime share the Debian release, so the binary's glibc matches.
ARG DEBIAN_RELEASE=bookworm
ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# Pingora's zlib-ng is built with cmake (and make); gcc comes with the rust image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# Dependency layer: rebuilt only when Cargo.toml or Cargo.lock change, not on every
# source edit. Cargo reads every target the manifest names before it builds any, so
# each [[bench]] gets a placeholder too (benches/ is not in the build context); the
# placeholder sources are thrown away afterwards, the bench ones kept for the manifest.
# tests/dockerfile.rs runs these steps in a tree holding what the context would.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/route.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
# COPY keeps the sources' own mtimes, which are older than the placeholder build:
# touch them so cargo rebuilds the holdfast crate instead of keeping the placeholder.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -m 0755 target/release/holdfast /usr/local/bin/holdfast

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates for TLS origins and control planes; a fixed non-root uid/gid so
# Kubernetes' runAsNonRoot can verify it and volume ownership is predictable.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 holdfast \
 && useradd --system --uid 10001 --gid holdfast --home-dir /var/lib/holdfast \
      --no-create-home --shell /usr/sbin/nologin holdfast \
 && mkdir -p /etc/holdfast /var/lib/holdfast \
 && chown holdfast:holdfast /var/lib/holdfast
COPY --from=builder /usr/local/bin/holdfast /usr/local/bin/holdfast
# /etc/holdfast holds conf/ (so the demo origin's `root: demo` resolves next to the
# config); the container variant of the config is the one the image runs. Mount your
# own file over /etc/holdfast/holdfast.yaml to replace it.
COPY conf/ /etc/holdfast/
COPY conf/container.yaml /etc/holdfast/holdfast.yaml
# The control plane's last-known-good customer document (control_plane.cache_file).
VOLUME ["/var/lib/holdfast"]
WORKDIR /var/lib/holdfast
USER 10001:10001
# Data plane and admin listener of conf/container.yaml.
EXPOSE 8080 9080
# SIGTERM drains requests in flight for at most shutdown_grace (8s), inside docker
# stop's default 10s.
STOPSIGNAL SIGTERM
# The binary itself asks GET /healthz of the admin listener in
# /etc/holdfast/holdfast.yaml (a 0.0.0.0 listener is asked on 127.0.0.1), so a config
# mounted there may move the admin port. No shell or curl in the image; the check
# gives up after its own --timeout (2s), inside docker's 5s.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["holdfast", "healthcheck", "-c", "/etc/holdfast/holdfast.yaml"]
ENTRYPOINT ["holdfast"]
CMD ["-c", "/etc/holdfast/holdfast.yaml"]
