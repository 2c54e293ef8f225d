# Herald's binaries for the local compose stack: the `herald` CLI (announce, serve) and the
# aggregator example.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p herald-cli \
    && cargo build --release -p herald-examples --example aggregator

FROM debian:bookworm-slim
COPY --from=build /src/target/release/herald /usr/local/bin/herald
COPY --from=build /src/target/release/examples/aggregator /usr/local/bin/herald-aggregator
ENTRYPOINT []
CMD ["herald", "--help"]
