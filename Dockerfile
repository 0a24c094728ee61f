# The lingr image: one binary for every role (`lingr api`, `lingr comet`, `lingr history`;
# `lingr dev` too, given a nats-server). Build it from the repository root:
#
#   docker build -t lingr .
#
# The build step is the README's release build, with the locked dependencies the test command
# also builds with (`--locked`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lingr \
    && cp target/release/lingr /lingr

# glibc and CA certificates, nothing else: no shell, no package manager, a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /lingr /usr/local/bin/lingr
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/lingr"]
CMD ["--help"]
