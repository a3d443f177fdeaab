# edgewatt — the two commands that matter:
#   make run    a real local energy measurement on this machine (no cluster needed)
#   make test   installs what is missing (as root, via apt), then lint + every test
SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := prometheus clang llvm bpftool libbpf-dev python3-venv
# binary each apt package provides, to tell whether it is installed
APT_PROBES := prometheus:prometheus promtool:prometheus clang:clang llvm-strip:llvm bpftool:bpftool
# tmux: the terminal `top`'s tests run it in (exporter/tests/top.rs)
APT_PROBES += tmux:tmux
# openipmi (ipmi_sim), ipmitool: a simulated BMC and its client for the IPMI tests (exporter/tests/ipmi.rs)
APT_PROBES += ipmi_sim:openipmi ipmitool:ipmitool

.PHONY: run test deps lint unit doc crds ebpf ebpf-check bench build-time chart-test \
	images image-bins image-toolchain images-test docker-images \
	images-check image-arm64-smoke release release-rehearsal

## `top` on this machine. Profile `local` (opt-level 1, no LTO) without the default features
## kubernetes/redfish/ipmi/serve (no kube, HTTP, TLS or tokio): a fresh clone shows its first
## frame in about 2 min on 2 cores (BENCHMARKS.md "make run").
## Reading RAPL needs root (Linux >= 5.10): `sudo make run`; `top` says so when it is not.
run:
	$(CARGO) run --profile local --no-default-features -p edgewatt-exporter -- top

## Lint first; then the tests with the images' release build beside them at the lowest CPU
## priority (`nice -n 19`): the end-to-end tests mostly wait on real processes, scrapes and
## timers, and the release build (the largest single piece of `make test`) takes that idle CPU
## instead of wall-clock time after the tests; the tests keep the CPU whenever they want it.
## The image tests then find the binaries built. BENCHMARKS.md "make test".
test: deps lint ebpf-check
	@mkdir -p $(CARGO_TARGET_DIR); rm -f $(CARGO_TARGET_DIR)/image-bins.rc; \
	if command -v buildah >/dev/null 2>&1; then \
	  echo "test: the images' release build runs niced beside the tests (log: $(CARGO_TARGET_DIR)/image-bins.log)"; \
	  { nice -n 19 $(MAKE) --no-print-directory image-prebuild >$(CARGO_TARGET_DIR)/image-bins.log 2>&1; \
	    echo $$? >$(CARGO_TARGET_DIR)/image-bins.rc; } & \
	fi; \
	rc=0; $(MAKE) --no-print-directory unit doc chart-test || rc=$$?; \
	wait; \
	if [ -f $(CARGO_TARGET_DIR)/image-bins.rc ] && [ "$$(cat $(CARGO_TARGET_DIR)/image-bins.rc)" != 0 ]; then \
	  cat $(CARGO_TARGET_DIR)/image-bins.log; echo "test: the images' release build failed" >&2; rc=1; \
	fi; \
	[ $$rc = 0 ] && $(MAKE) --no-print-directory images-test

## What `images-test` compiles, compiled ahead (`make test` runs it beside the tests).
image-prebuild:
	$(MAKE) --no-print-directory image-bins IMAGE_ARCHS="$(IMAGES_TEST_ARCHS)"
	$(if $(filter arm64,$(IMAGES_TEST_ARCHS)),,$(MAKE) --no-print-directory image-arm64-smoke)

## Install missing system packages (needs root) or say exactly what is missing.
deps:
	@missing=""; \
	for probe in $(APT_PROBES); do \
	  bin=$${probe%%:*}; pkg=$${probe##*:}; \
	  command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$pkg"; \
	done; \
	[ -f /usr/include/bpf/libbpf.h ] || missing="$$missing libbpf-dev"; \
	python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "deps: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "deps: missing Debian packages:$$missing — run as root or: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi
	@$(CARGO) nextest --version >/dev/null 2>&1 || { echo "deps: installing cargo-nextest"; $(CARGO) install --locked cargo-nextest; }
	@# sushy-static: a real Redfish server for the exporter's Redfish tests (PyPI sushy-tools).
	@[ -x .venv/bin/sushy-static ] || { echo "deps: installing sushy-tools into .venv"; python3 -m venv .venv && .venv/bin/pip install -q sushy-tools; }
	@# helm-sdkpy: Helm's own engine (Go library) for the chart tests; it declares Python >= 3.12 but works on 3.11.
	@# kubernetes-validate: Kubernetes' OpenAPI schemas per release, offline (charts/tests/k8s_schemas.py).
	@.venv/bin/python -c 'import helm_sdkpy, yaml, kubernetes_validate' 2>/dev/null || { echo "deps: installing helm-sdkpy, pyyaml, kubernetes-validate into .venv"; .venv/bin/pip install -q --ignore-requires-python helm-sdkpy pyyaml 'kubernetes-validate==1.37.0'; }
	@# `make images`: buildah, musl-gcc (Debian musl-tools: ring's C for x86_64), the CA bundle the
	@# images carry, rustup's musl targets (x86_64, aarch64; aarch64's C is clang's, above);
	@# qemu-user-static runs the arm64 binaries in the image tests; skopeo pushes a release and
	@# docker-registry is the local registry its rehearsal pushes to (hack/release.sh).
	@# Optional: without them the image tests skip loudly.
	@missing=""; \
	command -v buildah >/dev/null 2>&1 || missing="$$missing buildah"; \
	command -v musl-gcc >/dev/null 2>&1 || missing="$$missing musl-tools"; \
	[ -f $(CA_BUNDLE) ] || missing="$$missing ca-certificates"; \
	command -v qemu-aarch64-static >/dev/null 2>&1 || missing="$$missing qemu-user-static"; \
	command -v skopeo >/dev/null 2>&1 || missing="$$missing skopeo"; \
	command -v docker-registry >/dev/null 2>&1 || missing="$$missing docker-registry"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "deps: installing$$missing (for make images)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	      || echo "deps: WARNING: could not install$$missing — make images fails and its tests are SKIPPED" >&2; \
	  else \
	    echo "deps: WARNING: missing$$missing (for make images) — run as root or: sudo apt-get install$$missing" >&2; \
	  fi; \
	fi
	@if command -v rustup >/dev/null 2>&1; then \
	  for t in $(ALL_MUSL_TARGETS); do \
	    rustup target list --installed | grep -qx "$$t" || { echo "deps: rustup target add $$t"; rustup target add "$$t"; }; \
	  done; \
	else echo "deps: WARNING: no rustup — make images needs Rust's $(ALL_MUSL_TARGETS) standard libraries" >&2; fi
	@echo "deps: ok (prometheus $$(prometheus --version 2>&1 | head -1 | awk '{print $$3}'), clang $$(clang --version | head -1 | awk '{print $$NF}'))"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p edgewatt-exporter --all-targets --features gpu -- -D warnings
	@# what `make run` builds: the exporter without its default features (crds without `api`)
	$(CARGO) clippy -p edgewatt-exporter --no-default-features --lib --bins -- -D warnings

## The end-to-end tests start the project's binaries: the test build builds them (each binary's
## package has integration tests, which cargo builds its binaries for) with the test build's
## features, so there is no second build of the dependency tree for a `cargo build --bins`.
unit:
	$(CARGO) nextest run --workspace --no-fail-fast
	@# the NVML source builds and degrades cleanly without NVIDIA software. The gpu tests live in
	@# the exporter's lib and tests/fixtures.rs; `--workspace` keeps the features the run above
	@# unified (`-p` recompiled crds, e2e and the exporter: 2 min instead of 21 s)
	$(CARGO) nextest run --workspace --features edgewatt-exporter/gpu --lib --test fixtures \
	  -E 'package(edgewatt-exporter) & test(gpu)'

doc:
	$(CARGO) test --workspace --doc

## Regenerate crds/*.yaml from the Rust types and copy the EnergyPolicy CRD into the chart.
crds:
	$(CARGO) run -q -p edgewatt-crds --features schema --bin crdgen
	cp crds/edgewatt.io_energypolicies.yaml charts/edgewatt/crds/
	cp crds/edgewatt.io_powermodels.yaml charts/edgewatt/crds/

## Clean-build time of the whole workspace (recorded in BENCHMARKS.md).
build-time:
	$(CARGO) clean
	time $(CARGO) build --workspace --all-targets

## Rebuild the committed eBPF object from ebpf/cpu_account.bpf.c (needs clang, llvm).
ebpf:
	$(MAKE) -C ebpf -B

## Fail when the committed eBPF object does not match its source.
ebpf-check:
	$(MAKE) -s -C ebpf check

## The Helm chart: dashboards up to date, helm lint and install (Helm's engine via helm-sdkpy)
## into the API server double with RBAC/PodSecurity checks, every PromQL expression through
## promtool, alert unit tests, and the expressions against a real Prometheus scraping the binaries.
chart-test:
	python3 charts/tools/dashboards.py --check
	.venv/bin/python charts/tests/lint.py
	.venv/bin/python charts/tests/promql.py
	promtool test rules charts/tests/alerts.test.yaml
	@# chart_install and chart_promql (e2e) run with the other tests in `make unit`

## ---- Container images (README "Images") ------------------------------------------------------
## `make images` builds the three images offline for linux/amd64 and linux/arm64 (edge boards:
## Jetson, Raspberry Pi, Ampere): static musl binaries (cargo profile `image`; from an x86_64
## machine arm64 is cross-compiled, see AARCH64_ENV) copied FROM scratch with buildah (vfs
## storage under target/images; no base image, no RUN step) and written as one multi-arch OCI
## archive per component, target/images/edgewatt-<component>.oci.tar: an image index with one
## manifest per platform, tagged <IMAGE_REGISTRY>/edgewatt/edgewatt-<component>:<Chart.appVersion>
## — the chart's defaults (`<component>.image.registry`/`repository`, tag = appVersion) — and its
## digest in target/images/edgewatt-<component>.digest. `make images IMAGE_REGISTRY=x` tags for
## the chart's `global.imageRegistry=x`; `make images IMAGE_ARCHS=amd64` builds one platform.
## The Dockerfile builds the same layout (`make docker-images`); e2e/tests/images.rs holds both,
## and the chart, to it. Publishing: `make release` (hack/release.sh).
IMAGE_COMPONENTS := exporter controller scheduler
workspace_field = $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^$(1) *= *"\(.*\)"/\1/p' Cargo.toml)
CRATE_VERSION := $(call workspace_field,version)
IMAGE_SOURCE := $(call workspace_field,repository)
IMAGE_LICENSES := $(call workspace_field,license)
CHART_APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^" ]*\)"\{0,1\} *$$/\1/p' charts/edgewatt/Chart.yaml)
IMAGE_REGISTRY ?= ghcr.io
IMAGE_REPOSITORY_PREFIX ?= edgewatt/edgewatt-
## Platforms, by OCI architecture name. An x86_64 machine builds both (arm64 cross-compiled); an
## arm64 machine builds arm64 natively (amd64 from there is not set up: ring's x86_64 C needs musl
## headers for x86_64).
HOST_OCI_ARCH := $(patsubst x86_64,amd64,$(patsubst aarch64,arm64,$(shell uname -m)))
ifeq ($(HOST_OCI_ARCH),amd64)
IMAGE_ARCHS ?= amd64 arm64
else
IMAGE_ARCHS ?= $(HOST_OCI_ARCH)
endif
musl_target = $(patsubst amd64,x86_64,$(patsubst arm64,aarch64,$(1)))-unknown-linux-musl
MUSL_TARGETS := $(foreach a,$(IMAGE_ARCHS),$(call musl_target,$(a)))
ALL_MUSL_TARGETS := x86_64-unknown-linux-musl aarch64-unknown-linux-musl
## aarch64, from any machine: C (ring, psm's assembly) by Debian's clang for aarch64-linux-musl
## (ring builds for musl targets other than x86_64 without a sysroot: -nostdlibinc), archived
## by llvm-ar, linked by rustup's rust-lld against Rust's self-contained musl (crt objects and
## libc.a ship with the rustup target). No aarch64 gcc, no sysroot.
AARCH64_ENV := CC_aarch64_unknown_linux_musl=clang AR_aarch64_unknown_linux_musl=llvm-ar \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
CARGO_TARGET_DIR ?= target
IMAGE_DIR := target/images
IMAGE_BIN_OUT ?= $(IMAGE_DIR)/bin
CA_BUNDLE := /etc/ssl/certs/ca-certificates.crt
BUILDAH = buildah --storage-driver vfs --root $(CURDIR)/$(IMAGE_DIR)/storage --runroot $(CURDIR)/$(IMAGE_DIR)/run
# per component: user (numeric; the exporter is root, see Dockerfile), port (EXPOSE), description
exporter_USER := 0:0
exporter_PORT := 9102
exporter_DESCRIPTION := edgewatt per-node energy exporter (static, no NVML)
controller_USER := 65532:65532
controller_PORT := 8080
controller_DESCRIPTION := edgewatt EnergyPolicy controller
scheduler_USER := 65532:65532
scheduler_PORT := 8888
scheduler_DESCRIPTION := edgewatt kube-scheduler extender
IMAGE_ARCHIVES := $(foreach c,$(IMAGE_COMPONENTS),$(IMAGE_DIR)/edgewatt-$(c).oci.tar)
.PHONY: $(IMAGE_ARCHIVES) images-check image-arm64-smoke image-prebuild release release-rehearsal

image-toolchain:
	@for t in $(MUSL_TARGETS); do \
	  rustup target list --installed 2>/dev/null | grep -qx "$$t" || { echo "images: rustup target add $$t"; rustup target add "$$t"; }; \
	done
	@$(if $(filter amd64,$(IMAGE_ARCHS)),command -v musl-gcc >/dev/null 2>&1 || { echo "images: musl-gcc missing (Debian musl-tools; make deps installs it as root)" >&2; exit 1; })
	@$(if $(filter arm64,$(IMAGE_ARCHS)),for t in clang llvm-ar; do command -v $$t >/dev/null 2>&1 || { echo "images: $$t missing for arm64 (Debian clang, llvm; make deps installs them as root)" >&2; exit 1; }; done)

## The three static binaries of each platform, copied to IMAGE_BIN_OUT/<arch>/ (the Dockerfile
## runs this too). One cargo invocation for all targets: build scripts and proc-macros (host
## code) are built once and shared.
image-bins: image-toolchain
	$(AARCH64_ENV) $(CARGO) build --locked --profile image $(foreach t,$(MUSL_TARGETS),--target $(t)) \
	  $(foreach c,$(IMAGE_COMPONENTS),-p edgewatt-$(c)) --bins
	$(foreach a,$(IMAGE_ARCHS),mkdir -p $(IMAGE_BIN_OUT)/$(a) && \
	  cp $(foreach c,$(IMAGE_COMPONENTS),$(CARGO_TARGET_DIR)/$(call musl_target,$(a))/image/edgewatt-$(c)) $(IMAGE_BIN_OUT)/$(a)/ &&) true

images: $(IMAGE_ARCHIVES)
	@rm -rf $(IMAGE_DIR)/storage $(IMAGE_DIR)/run
	@ls -l $(IMAGE_ARCHIVES)

## One multi-arch archive: always reassembled (seconds), so it never lags the binaries or the git
## revision. Created time and file times are the last commit's, or SOURCE_DATE_EPOCH
## (reproducible layers and digests). Each platform's image is committed to the local storage,
## added to an image index named by the reference, and `manifest push --all` writes the index
## with every image's blobs (buildah 1.28: a nested index, ref.name on the outer entry).
$(IMAGE_ARCHIVES): $(IMAGE_DIR)/edgewatt-%.oci.tar: image-bins
	@command -v buildah >/dev/null 2>&1 || { echo "images: buildah missing (make deps installs it as root)" >&2; exit 1; }
	@[ "$(CRATE_VERSION)" = "$(CHART_APP_VERSION)" ] || { echo "images: crate version $(CRATE_VERSION) != Chart.yaml appVersion $(CHART_APP_VERSION); the tag would lie" >&2; exit 1; }
	@set -euo pipefail; \
	ref='$(IMAGE_REGISTRY)/$(IMAGE_REPOSITORY_PREFIX)$*:$(CHART_APP_VERSION)'; \
	epoch=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)}; \
	rev=$$(git rev-parse HEAD 2>/dev/null || echo unknown); \
	ctr=""; \
	trap '[ -z "$$ctr" ] || $(BUILDAH) rm "$$ctr" >/dev/null 2>&1 || true' EXIT; \
	$(BUILDAH) manifest rm "$$ref" >/dev/null 2>&1 || true; \
	$(BUILDAH) manifest create "$$ref" >/dev/null; \
	for arch in $(IMAGE_ARCHS); do \
	  ctr=$$($(BUILDAH) from --quiet scratch); \
	  $(BUILDAH) copy --quiet --chmod 0644 "$$ctr" $(CA_BUNDLE) /etc/ssl/certs/ca-certificates.crt; \
	  $(BUILDAH) copy --quiet --chmod 0755 "$$ctr" $(IMAGE_BIN_OUT)/$$arch/edgewatt-$* /usr/local/bin/edgewatt-$*; \
	  $(BUILDAH) config --os linux --arch $$arch --workingdir / --cmd '' \
	    --entrypoint '["/usr/local/bin/edgewatt-$*"]' --user $($*_USER) --port $($*_PORT)/tcp \
	    --created-by 'make images: buildah copy of the static binary and the CA bundle' \
	    --label io.buildah.version- \
	    --label org.opencontainers.image.title=edgewatt-$* \
	    --label 'org.opencontainers.image.description=$($*_DESCRIPTION)' \
	    --label org.opencontainers.image.version=$(CHART_APP_VERSION) \
	    --label org.opencontainers.image.revision=$$rev \
	    --label org.opencontainers.image.created=$$(date -u -d @$$epoch +%Y-%m-%dT%H:%M:%SZ) \
	    --label org.opencontainers.image.source=$(IMAGE_SOURCE) \
	    --label org.opencontainers.image.licenses=$(IMAGE_LICENSES) \
	    "$$ctr"; \
	  $(BUILDAH) commit --quiet --format oci --timestamp "$$epoch" "$$ctr" "localhost/edgewatt-$*:$$arch" >/dev/null; \
	  $(BUILDAH) rm "$$ctr" >/dev/null; ctr=""; \
	  $(BUILDAH) manifest add "$$ref" "containers-storage:localhost/edgewatt-$*:$$arch" >/dev/null; \
	done; \
	rm -f $@ $(IMAGE_DIR)/edgewatt-$*.digest; \
	$(BUILDAH) manifest push --quiet --all --format oci --digestfile $(IMAGE_DIR)/edgewatt-$*.digest \
	  "$$ref" oci-archive:$@:"$$ref"; \
	echo "images: $@ ($$ref@$$(cat $(IMAGE_DIR)/edgewatt-$*.digest); $(IMAGE_ARCHS))"

## `make test` builds this machine's platform only: a second full compile (arm64) would add
## about as much again as the first (≈ 28 CPU-minutes, README "Images"). arm64 instead gets
## this smoke build: the exporter as `make run` builds it (no default features: no kube, TLS,
## tokio) with the image profile for aarch64-unknown-linux-musl, linked as the images are
## (rust-lld, self-contained musl), and ring's C and assembly cross-compiled with clang; the
## image tests run it under qemu-aarch64-static on a Jetson AGX Orin fixture. The full arm64
## images are built and tested by `make release` (and `make images-test IMAGES_TEST_ARCHS="amd64 arm64"`).
IMAGE_SMOKE_DIR := $(IMAGE_DIR)/smoke/arm64
image-arm64-smoke:
	@$(MAKE) --no-print-directory image-toolchain IMAGE_ARCHS=arm64
	$(AARCH64_ENV) $(CARGO) build --locked --profile image --target aarch64-unknown-linux-musl -p ring
	$(AARCH64_ENV) $(CARGO) build --locked --profile image --target aarch64-unknown-linux-musl \
	  -p edgewatt-exporter --no-default-features --bin edgewatt-exporter
	@mkdir -p $(IMAGE_SMOKE_DIR)
	cp $(CARGO_TARGET_DIR)/aarch64-unknown-linux-musl/image/edgewatt-exporter $(IMAGE_SMOKE_DIR)/

## The archives checked (OCI index → one manifest per platform → config, labels, files,
## `chroot … --version` natively and `qemu-aarch64-static … --version` for arm64, the
## Dockerfile), the chart's image references against them, and the release script's rehearsal.
## Needs root (buildah, chroot). IMAGES_TEST_ARCHS: the platforms `make test` builds and the
## tests require in each index.
IMAGES_TEST_ARCHS ?= $(HOST_OCI_ARCH)
images-test:
	@if ! command -v buildah >/dev/null 2>&1; then \
	  echo "################################################################################" >&2; \
	  echo "## SKIPPED: container images and their tests: buildah is missing (make deps,  ##" >&2; \
	  echo "## as root, installs it: apt-get install buildah musl-tools qemu-user-static)  ##" >&2; \
	  echo "################################################################################" >&2; \
	else \
	  $(MAKE) images IMAGE_ARCHS="$(IMAGES_TEST_ARCHS)" \
	  && { [ "$(filter arm64,$(IMAGES_TEST_ARCHS))" ] || $(MAKE) image-arm64-smoke; } \
	  && $(MAKE) images-check IMAGE_ARCHS="$(IMAGES_TEST_ARCHS)"; \
	fi

## The image tests on the archives in target/images, which must hold exactly IMAGE_ARCHS. With
## `--workspace` (filtered to the one test binary) it reuses `make unit`'s test build: `-p
## edgewatt-e2e` alone unifies dependency features differently and recompiles part of them.
images-check:
	EDGEWATT_IMAGE_ARCHS="$(IMAGE_ARCHS)" $(CARGO) nextest run --workspace --run-ignored only \
	  -E 'binary_id(edgewatt-e2e::images)' --no-fail-fast

## Publish: build both platforms, test them, push each index to RELEASE_REGISTRY, sign it
## (cosign), record the digests and write them into the chart's values.yaml. Everything but the
## push and the signature also runs offline: `make release-rehearsal` pushes into a local OCI
## layout instead. README "Releasing images".
release:
	hack/release.sh

release-rehearsal:
	hack/release.sh --oci-dir target/release/oci --no-sign

## The same three images with docker (or DOCKER=podman) from the Dockerfile, for this machine's
## platform; `docker buildx build --platform linux/amd64,linux/arm64 …` for both (README).
DOCKER ?= docker
docker-images:
	@set -e; for c in $(IMAGE_COMPONENTS); do \
	  $(DOCKER) build --target $$c -t $(IMAGE_REGISTRY)/$(IMAGE_REPOSITORY_PREFIX)$$c:$(CHART_APP_VERSION) \
	    --build-arg VERSION=$(CHART_APP_VERSION) --build-arg REVISION=$$(git rev-parse HEAD) \
	    --build-arg CREATED=$$(date -u -d @$$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) \
	    --build-arg SOURCE=$(IMAGE_SOURCE) --build-arg LICENSES=$(IMAGE_LICENSES) . ; \
	done
