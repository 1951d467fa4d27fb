# syntax=docker/dockerfile:1
# Build: docker build -t asyncgate .
# Run:   docker run -p 8080:8080 -p 9901:9901 -v $PWD/my.toml:/etc/asyncgate/asyncgate.toml:ro asyncgate
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# The image has no .git: `docker build --build-arg ASYNCGATE_COMMIT=$(git
# rev-parse --short=12 HEAD) .` names the commit in `asyncgate --version`.
ARG ASYNCGATE_COMMIT=unknown
ENV ASYNCGATE_COMMIT=$ASYNCGATE_COMMIT
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
# (Cargo.toml names the benchmark examples' files, so they get stand-ins too.)
RUN mkdir src bench && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > bench/backend.rs && echo 'fn main() {}' > bench/fill.rs \
    && cargo build --release --locked && rm -rf src bench
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin asyncgate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home asyncgate
COPY --from=builder /src/target/release/asyncgate /usr/local/bin/asyncgate
COPY config/asyncgate.toml /etc/asyncgate/asyncgate.toml
# The example listens on loopback, which a container's port mapping cannot
# reach; mount your own config over this file to name your real upstreams.
# The admin listener is opened to the container's network too, for the
# kubelet's probes and Prometheus: keep 9901 off any public ingress.
RUN sed -i -e 's/^listen = "127.0.0.1:8080"/listen = "0.0.0.0:8080"/' \
    -e 's/^listen = "127.0.0.1:9901"/listen = "0.0.0.0:9901"/' \
    -e 's|^path = "data"|path = "/var/lib/asyncgate"|' /etc/asyncgate/asyncgate.toml \
    && mkdir -p /var/lib/asyncgate && chown asyncgate /var/lib/asyncgate
# The disk store: mount a volume here to keep jobs across containers.
VOLUME /var/lib/asyncgate
USER asyncgate
EXPOSE 8080 9901
# The binary asks its own admin listener: no curl in the image.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/asyncgate", "health", "--config", "/etc/asyncgate/asyncgate.toml"]
ENTRYPOINT ["/usr/local/bin/asyncgate"]
CMD ["--config", "/etc/asyncgate/asyncgate.toml"]
STOPSIGNAL SIGTERM
