# syntax=docker/dockerfile:1
# deltamv in a container. Build stage: compiles the release binary (RocksDB's C++ sources
# included, so the first build takes 15-25 minutes; the cache mounts make later builds fast).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin deltamv \
 && cp target/release/deltamv /usr/local/bin/deltamv

# Runtime stage: the binary (links libstdc++, which the slim image has) and the view definitions.
FROM debian:bookworm-slim
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin deltamv \
 && mkdir -p /var/lib/deltamv \
 && chown deltamv:deltamv /var/lib/deltamv
COPY --from=build /usr/local/bin/deltamv /usr/local/bin/deltamv
WORKDIR /app
COPY schema ./schema
ENV DELTAMV_STATE_DIR=/var/lib/deltamv \
    DELTAMV_VIEWS=/app/schema/views
VOLUME /var/lib/deltamv
USER deltamv
# `run` initializes on first start (publication, slot, targets, snapshot) and stops on SIGTERM.
CMD ["deltamv", "run"]
