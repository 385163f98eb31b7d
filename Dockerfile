# The tollgate service. Build: `docker build -t tollgate .` (or `docker compose up --build`).
# Not built on the development machine, which has no Docker engine: see README.md.

# The builder matches the runtime's Debian release, so the binary finds the glibc it was linked
# against (a plain rust:1 may move to a newer Debian than bookworm).
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
# ca-certificates: a rediss:// URL checks the server's certificate against the system's CAs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin tollgate
COPY --from=builder /src/target/release/tollgate /usr/local/bin/tollgate
# An empty working directory: no tollgate.toml or .env is read unless mounted here.
WORKDIR /etc/tollgate
USER tollgate
# The service listens on 127.0.0.1:8000 by default, which a container cannot publish.
ENV TOLLGATE_LISTEN=0.0.0.0:8000
EXPOSE 8000
CMD ["tollgate"]
