# esmd as a container (see the README's "In a container"): built in the Rust image, run as a
# non-root user on Debian slim with curl for the health check. The config is read from
# /etc/esmd/esmd.toml; the state directory (stream checkpoints, the LOCK) is the volume
# /var/lib/esmd; the HEALTHCHECK asks /healthz, so the config needs
# [admin] listen = "127.0.0.1:9464" (or "0.0.0.0:9464" with allow_remote_admin = true).
FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin esmd

FROM debian:trixie-slim
# The default [state] dir is .esmd beside the config file: there, a link to the volume.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/esmd esmd \
    && mkdir -p /etc/esmd /var/lib/esmd \
    && chown esmd:esmd /var/lib/esmd \
    && ln -s /var/lib/esmd /etc/esmd/.esmd
COPY --from=build /src/target/release/esmd /usr/local/bin/esmd
USER esmd
ENV ESMD_CONFIG=/etc/esmd/esmd.toml
VOLUME /var/lib/esmd
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["esmd"]
CMD ["run"]
