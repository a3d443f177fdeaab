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
	images image-bins image-toolchain images-test docker-images

## `top` on this machine. Profile `local` (opt-level 1, no LTO) without the default features
## kubernetes/redfish/ipmi/serve (no kube, HTTP, TLS or tokio): a fresh clone shows its first
## frame in about 2 min on 2 cores (BENCHMARKS.md "make run").
## Reading RAPL needs root (Linux >= 5.10): `sudo make run`; `top` says so when it is not.
run:
	$(CARGO) run --profile local --no-default-features -p edgewatt-exporter -- top

test: deps lint ebpf-check unit doc chart-test images-test

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
	@# `make images`: buildah, musl-gcc (Debian musl-tools, for crates with C such as ring), the CA
	@# bundle the images carry, rustup's musl target. Optional: without them the image tests skip loudly.
	@missing=""; \
	command -v buildah >/dev/null 2>&1 || missing="$$missing buildah"; \
	command -v musl-gcc >/dev/null 2>&1 || missing="$$missing musl-tools"; \
	[ -f $(CA_BUNDLE) ] || missing="$$missing ca-certificates"; \
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
	  rustup target list --installed | grep -qx '$(MUSL_TARGET)' || { echo "deps: rustup target add $(MUSL_TARGET)"; rustup target add $(MUSL_TARGET); }; \
	else echo "deps: WARNING: no rustup — make images needs Rust's $(MUSL_TARGET) standard library" >&2; fi
	@echo "deps: ok (prometheus $$(prometheus --version 2>&1 | head -1 | awk '{print $$3}'), clang $$(clang --version | head -1 | awk '{print $$NF}'))"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p edgewatt-exporter --all-targets --features gpu -- -D warnings
	@# what `make run` builds: the exporter without its default features (crds without `api`)
	$(CARGO) clippy -p edgewatt-exporter --no-default-features --lib --bins -- -D warnings

unit:
	@# the end-to-end tests start the project's binaries: build them all first
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast
	@# the NVML source builds and degrades cleanly without NVIDIA software
	$(CARGO) nextest run -p edgewatt-exporter --features gpu -E 'test(gpu)'

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
## `make images` builds the three images offline: static musl binaries (cargo profile `image`)
## copied FROM scratch with buildah (vfs storage under target/images; no base image, no RUN step)
## and written as OCI archives target/images/edgewatt-<component>.oci.tar, tagged
## <IMAGE_REGISTRY>/edgewatt/edgewatt-<component>:<Chart.appVersion> — the chart's defaults
## (`<component>.image.registry`/`repository`, tag = appVersion). `make images IMAGE_REGISTRY=x`
## tags for the chart's `global.imageRegistry=x`. The Dockerfile builds the same layout
## (`make docker-images`); e2e/tests/images.rs holds both, and the chart, to it.
IMAGE_COMPONENTS := exporter controller scheduler
workspace_field = $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^$(1) *= *"\(.*\)"/\1/p' Cargo.toml)
CRATE_VERSION := $(call workspace_field,version)
IMAGE_SOURCE := $(call workspace_field,repository)
IMAGE_LICENSES := $(call workspace_field,license)
CHART_APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^" ]*\)"\{0,1\} *$$/\1/p' charts/edgewatt/Chart.yaml)
IMAGE_REGISTRY ?= ghcr.io
IMAGE_REPOSITORY_PREFIX ?= edgewatt/edgewatt-
## Native builds only: on an arm64 board `make images` builds aarch64 images (see README).
IMAGE_ARCH := $(shell uname -m)
OCI_ARCH := $(patsubst x86_64,amd64,$(patsubst aarch64,arm64,$(IMAGE_ARCH)))
MUSL_TARGET := $(IMAGE_ARCH)-unknown-linux-musl
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
.PHONY: $(IMAGE_ARCHIVES)

image-toolchain:
	@rustup target list --installed 2>/dev/null | grep -qx '$(MUSL_TARGET)' || { echo "images: rustup target add $(MUSL_TARGET)"; rustup target add $(MUSL_TARGET); }
	@command -v musl-gcc >/dev/null 2>&1 || { echo "images: musl-gcc missing (Debian musl-tools; make deps installs it as root)" >&2; exit 1; }

## The three static binaries, copied to IMAGE_BIN_OUT (the Dockerfile runs this too).
image-bins: image-toolchain
	$(CARGO) build --locked --profile image --target $(MUSL_TARGET) $(foreach c,$(IMAGE_COMPONENTS),-p edgewatt-$(c)) --bins
	@mkdir -p $(IMAGE_BIN_OUT)
	cp $(foreach c,$(IMAGE_COMPONENTS),$(CARGO_TARGET_DIR)/$(MUSL_TARGET)/image/edgewatt-$(c)) $(IMAGE_BIN_OUT)/

images: $(IMAGE_ARCHIVES)
	@rm -rf $(IMAGE_DIR)/storage $(IMAGE_DIR)/run
	@ls -l $(IMAGE_ARCHIVES)

## One image: always reassembled (seconds), so it never lags the binaries or the git revision.
## Created time and file times are the last commit's, or SOURCE_DATE_EPOCH (reproducible layers).
$(IMAGE_ARCHIVES): $(IMAGE_DIR)/edgewatt-%.oci.tar: image-bins
	@command -v buildah >/dev/null 2>&1 || { echo "images: buildah missing (make deps installs it as root)" >&2; exit 1; }
	@[ "$(CRATE_VERSION)" = "$(CHART_APP_VERSION)" ] || { echo "images: crate version $(CRATE_VERSION) != Chart.yaml appVersion $(CHART_APP_VERSION); the tag would lie" >&2; exit 1; }
	@set -euo pipefail; \
	ref='$(IMAGE_REGISTRY)/$(IMAGE_REPOSITORY_PREFIX)$*:$(CHART_APP_VERSION)'; \
	epoch=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)}; \
	rev=$$(git rev-parse HEAD 2>/dev/null || echo unknown); \
	ctr=$$($(BUILDAH) from --quiet scratch); \
	trap '$(BUILDAH) rm "$$ctr" >/dev/null 2>&1 || true' EXIT; \
	$(BUILDAH) copy --quiet --chmod 0644 "$$ctr" $(CA_BUNDLE) /etc/ssl/certs/ca-certificates.crt; \
	$(BUILDAH) copy --quiet --chmod 0755 "$$ctr" $(IMAGE_BIN_OUT)/edgewatt-$* /usr/local/bin/edgewatt-$*; \
	$(BUILDAH) config --os linux --arch $(OCI_ARCH) --workingdir / --cmd '' \
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
	$(BUILDAH) commit --quiet --format oci --timestamp "$$epoch" "$$ctr" "$$ref" >/dev/null; \
	rm -f $@; \
	$(BUILDAH) push --quiet "$$ref" oci-archive:$@:"$$ref"; \
	echo "images: $@ ($$ref)"

## The archives checked (OCI structure, config, labels, files, `chroot … --version`, the Dockerfile)
## and the chart's image references against them. Needs root (buildah, chroot).
images-test:
	@if ! command -v buildah >/dev/null 2>&1; then \
	  echo "################################################################################" >&2; \
	  echo "## SKIPPED: container images and their tests: buildah is missing (make deps,  ##" >&2; \
	  echo "## as root, installs it: apt-get install buildah musl-tools)                  ##" >&2; \
	  echo "################################################################################" >&2; \
	else \
	  $(MAKE) images && $(CARGO) nextest run -p edgewatt-e2e --test images --run-ignored only --no-fail-fast; \
	fi

## The same three images with docker (or DOCKER=podman) from the Dockerfile.
DOCKER ?= docker
docker-images:
	@set -e; for c in $(IMAGE_COMPONENTS); do \
	  $(DOCKER) build --target $$c -t $(IMAGE_REGISTRY)/$(IMAGE_REPOSITORY_PREFIX)$$c:$(CHART_APP_VERSION) \
	    --build-arg VERSION=$(CHART_APP_VERSION) --build-arg REVISION=$$(git rev-parse HEAD) \
	    --build-arg CREATED=$$(date -u -d @$$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) \
	    --build-arg SOURCE=$(IMAGE_SOURCE) --build-arg LICENSES=$(IMAGE_LICENSES) . ; \
	done
