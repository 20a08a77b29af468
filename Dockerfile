# esprit-edge container image: the edge in place of the Esprit-Hub stack's
# nginx container. deploy/README.md has the build, the run and the swap.
#
#   docker build -t esprit-edge .
#
# Two stages: the build (Rust on Debian bookworm) and a small runtime
# (debian:bookworm-slim, same glibc as the build) holding the binary, the
# default config and CA certificates, running as uid 10001.

# ---------------------------------------------------------------- build ----
FROM rust:1.95-bookworm AS build

# cmake: Pingora's zlib-ng (libz-ng-sys) builds with it; gcc and make are in
# the rust image already. Versions are not pinned (hadolint DL3008) on
# purpose: Debian replaces point-release versions on security updates, so a
# pin breaks the build; the image is reproducible through Cargo.lock and the
# base image tag instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependencies first, in a layer of their own that stays cached until
# Cargo.toml, Cargo.lock or vendor/ (pingora-proxy, wired in by
# [patch.crates-io]) change: the crate is built once against placeholder
# sources. The placeholder binary panics, so if it were ever shipped by
# mistake the `esprit-edge check` at the end of this file would fail the build.
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
RUN mkdir src \
    && echo 'fn main() { panic!("placeholder binary of the dependency layer") }' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources. COPY keeps the files' modification times, which can be
# older than the placeholder build: touch the crate roots so cargo rebuilds
# the crate (and only the crate). Same command as scripts/run.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked

# -------------------------------------------------------------- runtime ----
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="esprit-edge" \
      org.opencontainers.image.description="Pingora-based edge proxy and agent hub for the Esprit-Hub stack (replaces its nginx)"

# ca-certificates: the system roots, for HTTPS webhooks and upstreams (the
# binary also carries its own webpki roots). Unpinned for the reason above.
# The user: uid/gid 10001, no login shell, no home; it owns the data dir only.
# -l (--no-log-init): a high uid would otherwise grow /var/log/lastlog to GBs.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 esprit-edge \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin esprit-edge \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/esprit-edge \
    && install -d -m 0755 /etc/esprit-edge/certs

COPY --from=build /build/target/release/esprit-edge /usr/local/bin/esprit-edge
COPY conf/esprit-edge.toml /etc/esprit-edge/esprit-edge.toml

# ESPRIT_CONFIG: the config (mount your own over it, read-only).
# ESPRIT_DATA_DIR: users.toml, agents.json and the SQLite stores (sessions,
# hub events); it overrides server.data_dir of any mounted config too.
# ESPRIT_LISTEN is deliberately not set here, so a mounted config's
# server.listen is not silently overridden.
# The shipped config turns the first-run demo flow on; production does not.
ENV ESPRIT_CONFIG=/etc/esprit-edge/esprit-edge.toml \
    ESPRIT_DATA_DIR=/var/lib/esprit-edge \
    ESPRIT_DEMO=off

# Relative paths in the config resolve from here: the shipped [tls] example
# (cert = "certs/edge.crt") lands in the certs volume.
WORKDIR /etc/esprit-edge
# A named volume starts as a copy of these directories, ownership and mode
# included (/var/lib/esprit-edge: 10001, 0700). A bind mount does not: chown
# its host directory to 10001 first.
VOLUME ["/var/lib/esprit-edge", "/etc/esprit-edge/certs"]

USER 10001:10001

# The binary runs on this base (shared libraries present) and the shipped
# config is valid; fails the build on the dependency layer's placeholder.
RUN ["esprit-edge", "check"]

# 8080: plain HTTP (server.listen). 8443: TLS, only with a [tls] block in a
# mounted config. The admin listener (/metrics, /readyz) stays on
# 127.0.0.1:9090 unless ESPRIT_ADMIN_LISTEN says otherwise; it is not
# exposed (see deploy/README.md, "Metrics").
EXPOSE 8080 8443

# Liveness: GET /healthz on the public listener (answered before routing,
# limits and the HTTPS redirect). The image has no curl: bash (part of
# Debian's base) speaks HTTP/1.1 over /dev/tcp, which costs nothing in size.
# The port is ESPRIT_LISTEN's when set, else 8080.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "l=${ESPRIT_LISTEN:-:8080}; exec 3<>\"/dev/tcp/127.0.0.1/${l##*:}\" || exit 1; printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3; IFS= read -r -t 2 s <&3 || exit 1; case $s in 'HTTP/1.1 200 '*) exit 0 ;; *) exit 1 ;; esac"]

# docker stop sends SIGTERM: listeners close, in-flight requests get
# grace_period (1s), workers shutdown_timeout (2s); well inside docker's 10s.
STOPSIGNAL SIGTERM

# No ENTRYPOINT, so other subcommands read naturally:
#   docker run --rm -i esprit-edge esprit-edge user add alice --password-stdin
CMD ["esprit-edge"]
