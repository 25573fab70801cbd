# syntax=docker/dockerfile:1
# Image of the adobe-credential-operator binary. Build from the repository root:
#   docker build -t adobe-credential-operator:0.1.0 .

ARG RUST_VERSION=1.95

# ---- build ----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# Dependencies first, in a layer of their own that is reused until a manifest or the lock file
# changes: the workspace manifests with stub sources, built with the real Cargo.lock.
COPY Cargo.toml Cargo.lock ./
COPY tests/support/Cargo.toml tests/support/Cargo.toml
COPY tests/fake-token-server/Cargo.toml tests/fake-token-server/Cargo.toml
RUN mkdir -p src tests/support/src tests/fake-token-server/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs tests/support/src/lib.rs tests/fake-token-server/src/lib.rs \
    && cargo build --release --locked -p adobe-credential-operator \
    && rm -rf src

# Then the operator's own sources. The touch makes cargo rebuild the crate even when the copied
# files are older than the stub build.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p adobe-credential-operator \
    && ./target/release/adobe-credential-operator --version

# ---- runtime --------------------------------------------------------------------------------
# Distroless with glibc and libgcc (the `cc` variant): no shell, no package manager; CA
# certificates included. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="adobe-credential-operator" \
      org.opencontainers.image.description="Kubernetes operator that mints Adobe IMS (and other OAuth2) access tokens into Secrets and renews them before expiry" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /src/target/release/adobe-credential-operator /usr/local/bin/adobe-credential-operator

USER 65532:65532
ENTRYPOINT ["/usr/local/bin/adobe-credential-operator"]
CMD ["run"]
