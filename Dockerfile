# syntax=docker/dockerfile:1
#
# tidings: durable outbound-message queue worker.
#
#   docker build -t tidings:local .
#   docker run --rm tidings:local --help
#
# Stage 1 builds the release binary; stage 2 is a slim Debian runtime with only
# what the binary links against (OpenSSL via native-tls) plus curl for the
# compose healthcheck.

############################
# Stage 1: build
############################
FROM rust:1-bookworm AS build
WORKDIR /src

# sqlx's query macros must not try to reach a database at build time. If the
# code ever uses `sqlx::query!`, commit the `.sqlx/` offline data and copy it
# in below, next to `migrations`.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

# --- dependency layer -------------------------------------------------------
# Only the manifests and the lockfile: this layer (and the expensive compile of
# all dependencies) is reused until Cargo.toml / Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY tidings-client/Cargo.toml tidings-client/Cargo.toml

# Stub every target the workspace declares so cargo can resolve it, then build
# the dependency graph. The stubs are removed again, together with the
# fingerprints and artifacts of the two workspace crates, so the real sources
# copied below are always recompiled: COPY keeps the files' original mtimes,
# which may be older than the stub artifacts, and cargo would otherwise
# happily ship the empty stub binary.
RUN mkdir -p src benches tests/it tidings-client/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tidings-client/src/lib.rs \
 && echo 'fn main() {}' > benches/policy.rs \
 && echo 'fn main() {}' > tests/it/main.rs \
 && cargo build --release --locked --bin tidings \
 && rm -rf src benches tests tidings-client/src \
           target/release/.fingerprint/tidings-* \
           target/release/deps/tidings-* \
           target/release/deps/tidings_client-* \
           target/release/deps/libtidings* \
           target/release/tidings target/release/tidings.d

# --- application layer ------------------------------------------------------
# Anything else the build reads (a build.rs, .sqlx/, examples/ ...) must be
# added to the COPY lines below as well.
# migrations/ is copied before the build because `sqlx::migrate!()`, if the
# code uses it, embeds the migration files into the binary at compile time. benches/ and tests/ are declared targets in Cargo.toml, so they are
# copied to keep the manifest valid even though they are not built here.
COPY tidings-client tidings-client
COPY migrations migrations
COPY benches benches
COPY tests tests
COPY src src
RUN touch src/main.rs src/lib.rs tidings-client/src/lib.rs \
 && cargo build --release --locked --bin tidings \
 && install -m 0755 target/release/tidings /usr/local/bin/tidings \
 && test -n "$(/usr/local/bin/tidings --help)" # fails if the stub binary slipped through

############################
# Stage 2: runtime
############################
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to real providers / PostgreSQL with sslmode=require.
# libssl3: reqwest and sqlx use native-tls (OpenSSL) and link it dynamically.
# curl: only for the docker-compose healthcheck on /healthz (a few MB with
#       its libraries; drop it and that healthcheck for a smaller image).
# Versions are not pinned: bookworm point releases replace them, and pinned
# versions would make the build fail instead of picking up security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 tidings \
 && useradd --system --uid 10001 --gid tidings --home-dir /nonexistent \
            --no-create-home --shell /usr/sbin/nologin tidings

COPY --from=build /usr/local/bin/tidings /usr/local/bin/tidings

# Numeric so that runtimes can verify "not root" without reading /etc/passwd
# (10001 is the `tidings` user created above).
USER 10001:10001

# Prometheus metrics (/metrics) and health (/healthz). Note the worker binds
# 127.0.0.1 by default: set TIDINGS_HTTP_LISTEN=0.0.0.0:9464 (or [http] listen
# in the config) to make it reachable from outside the container.
EXPOSE 9464

ENTRYPOINT ["tidings"]
CMD ["--help"]
