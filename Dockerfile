# syntax=docker/dockerfile:1
# edgewatt's container images: one file, one target per component.
#
#   docker build --target exporter   -t ghcr.io/edgewatt/edgewatt-exporter:0.1.0 .
#   docker build --target controller -t ghcr.io/edgewatt/edgewatt-controller:0.1.0 .
#   docker build --target scheduler  -t ghcr.io/edgewatt/edgewatt-scheduler:0.1.0 .
#
# `make docker-images` runs exactly these with the build args below filled from Cargo.toml,
# Chart.yaml and git. Each image is FROM scratch: one static musl binary (cargo profile `image`,
# built by `make image-bins`, the same command `make images` runs) and Debian's CA bundle
# (Redfish and Prometheus over TLS), nothing else. `make images` assembles the same layout offline
# with buildah; e2e/tests/images.rs holds this file and the built archives to the same
# entrypoint, user, ports, files and label keys.
#
# arm64 (edge boards): `docker buildx build --platform linux/amd64,linux/arm64 --target <component> .`
# gives one multi-arch image. The build stage runs on the build machine's platform
# (`--platform=$BUILDPLATFORM`, no emulation) and cross-compiles for each TARGETARCH with the
# same `make image-bins IMAGE_ARCHS=<arch>` as `make images` (arm64: clang, llvm-ar, rust-lld).
#
# NVIDIA GPUs: these images have no `gpu` feature, because a static musl binary cannot dlopen
# libnvidia-ml. Target `exporter-gpu` is the glibc variant for GPU nodes. Always pass
# `--target`: without it Docker builds the last stage (scheduler).

ARG RUST_VERSION=1.95
# OCI label values; `make docker-images` passes this checkout's.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://example.invalid/edgewatt
ARG LICENSES=Apache-2.0

FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-bookworm AS source
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools clang llvm ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .

FROM source AS build
ARG TARGETARCH
# Registry and target directory are cache mounts; the binaries are copied out to /out/<arch>.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    make image-bins IMAGE_ARCHS=${TARGETARCH} IMAGE_BIN_OUT=/out

# The exporter for NVIDIA GPU nodes: glibc build with `--features gpu`, on distroless/cc (glibc,
# libgcc, CA certificates). libnvidia-ml.so.1 comes from the host through the NVIDIA container
# toolkit (runtimeClassName nvidia, NVIDIA_DRIVER_CAPABILITIES=utility); without it the exporter
# runs without a GPU source. Not built offline by `make images` and not tested in CI (no base
# image can be pulled there). Built on the target platform (emulated when it is not the build
# machine's): a glibc cross build would need the target's glibc.
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build-gpu
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target-gpu,sharing=locked \
    cargo build --locked --profile image --target-dir /src/target-gpu -p edgewatt-exporter --features gpu \
    && cp /src/target-gpu/image/edgewatt-exporter /edgewatt-exporter-gpu

FROM gcr.io/distroless/cc-debian12 AS exporter-gpu
ARG VERSION
ARG REVISION
ARG CREATED
ARG SOURCE
ARG LICENSES
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.title="edgewatt-exporter" \
      org.opencontainers.image.description="edgewatt per-node energy exporter with NVIDIA GPUs (NVML)"
COPY --from=build-gpu /edgewatt-exporter-gpu /usr/local/bin/edgewatt-exporter
USER 0:0
EXPOSE 9102/tcp
ENTRYPOINT ["/usr/local/bin/edgewatt-exporter"]

# What every image shares: the CA bundle and the OCI labels.
FROM scratch AS runtime
ARG VERSION
ARG REVISION
ARG CREATED
ARG SOURCE
ARG LICENSES
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt

# Root: RAPL's energy_uj is root-only since Linux 5.10 and eBPF needs it; the chart drops every
# capability except BPF and PERFMON and mounts the host read-only.
FROM runtime AS exporter
LABEL org.opencontainers.image.title="edgewatt-exporter" \
      org.opencontainers.image.description="edgewatt per-node energy exporter (static, no NVML)"
ARG TARGETARCH
COPY --from=build /out/${TARGETARCH}/edgewatt-exporter /usr/local/bin/edgewatt-exporter
USER 0:0
EXPOSE 9102/tcp
ENTRYPOINT ["/usr/local/bin/edgewatt-exporter"]

FROM runtime AS controller
LABEL org.opencontainers.image.title="edgewatt-controller" \
      org.opencontainers.image.description="edgewatt EnergyPolicy controller"
ARG TARGETARCH
COPY --from=build /out/${TARGETARCH}/edgewatt-controller /usr/local/bin/edgewatt-controller
USER 65532:65532
EXPOSE 8080/tcp
ENTRYPOINT ["/usr/local/bin/edgewatt-controller"]

FROM runtime AS scheduler
LABEL org.opencontainers.image.title="edgewatt-scheduler" \
      org.opencontainers.image.description="edgewatt kube-scheduler extender"
ARG TARGETARCH
COPY --from=build /out/${TARGETARCH}/edgewatt-scheduler /usr/local/bin/edgewatt-scheduler
USER 65532:65532
EXPOSE 8888/tcp
ENTRYPOINT ["/usr/local/bin/edgewatt-scheduler"]
