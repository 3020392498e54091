# One image for both the controller and the node agent: `osroll controller` and
# `osroll agent` are subcommands of the same binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Without the default `demo` feature: no test cluster and no simulated host in the image.
RUN cargo build --release --locked -p osroll --no-default-features && strip target/release/osroll

FROM debian:bookworm-slim
# ca-certificates: https image downloads; u-boot-tools: fw_printenv/fw_setenv for U-Boot
# boot control; util-linux: block device discovery. No shell tools beyond Debian's base.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates u-boot-tools util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/osroll /usr/local/bin/osroll
# The controller runs as this unprivileged user; the agent DaemonSet overrides it with a
# privileged security context.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/osroll"]
