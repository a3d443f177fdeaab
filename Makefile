# edgewatt — the two commands that matter:
#   make run    a real local energy measurement on this machine (no cluster needed)
#   make test   installs what is missing (as root, via apt), then lint + every test
SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := prometheus clang llvm bpftool libbpf-dev python3-venv
# binary each apt package provides, to tell whether it is installed
APT_PROBES := prometheus:prometheus promtool:prometheus clang:clang llvm-strip:llvm bpftool:bpftool

.PHONY: run test deps lint unit doc crds ebpf ebpf-check bench build-time chart-test

run:
	$(CARGO) run --release -p edgewatt-exporter -- top

test: deps lint ebpf-check unit doc chart-test

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
	@.venv/bin/python -c 'import helm_sdkpy, yaml' 2>/dev/null || { echo "deps: installing helm-sdkpy, pyyaml into .venv"; .venv/bin/pip install -q --ignore-requires-python helm-sdkpy pyyaml; }
	@echo "deps: ok (prometheus $$(prometheus --version 2>&1 | head -1 | awk '{print $$3}'), clang $$(clang --version | head -1 | awk '{print $$NF}'))"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p edgewatt-exporter --all-targets --features gpu -- -D warnings

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
	$(CARGO) run -q -p edgewatt-crds --bin crdgen
	cp crds/edgewatt.io_energypolicies.yaml charts/edgewatt/crds/

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
