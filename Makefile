# k8sailor: `make run` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all run test unit lint lint-go proto proto-python proto-go controlplane cluster cluster-down bench bench-shapes bench-limits bench-load fuzz image clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

# Generated code is committed; this regenerates it, and CI fails when that changes anything.
proto: proto-python proto-go

proto-python: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=. \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=. \
		proto/k8sailor/v1/exposure.proto

# Go stubs in client/go, with pinned protoc-gen-go and protoc-gen-go-grpc (installed on first use).
proto-go: $(STAMP)
	client/go/scripts/generate.sh

# Builds kube-apiserver and etcd from source once; later runs reuse ~/.cache/k8sailor.
controlplane: $(STAMP)
	$(PY) -m tests.controlplane build

cluster: controlplane
	@$(PY) -m tests.controlplane up

cluster-down: $(STAMP)
	@$(PY) -m tests.controlplane down

# The local control plane (unless $KUBECONFIG is set), a demo Deployment, and the server.
run: controlplane
	@$(PY) -m scripts.run_local

test: controlplane
	$(PY) -m pytest

# Not part of `make test`: timings belong in figures, not in assertions. Results: bench/results/.
# The client-go program is built into build/ (ignored by git), never committed.
CLIENTGO := build/bench-clientgo

$(CLIENTGO): bench/clientgo/main.go bench/clientgo/go.mod bench/clientgo/go.sum
	cd bench/clientgo && go build -o ../../$(CLIENTGO) .

# One runner per job: the N x c matrix, the request shapes, the concurrency limits.
bench: controlplane $(CLIENTGO)
	$(PY) -m bench.bench_matrix

# Only the request shapes of issue 11 and the fairness figure: a few minutes. BEFORE=DIR: the
# shapes on another checkout's server too, side by side (server CPU per Service, after / before).
bench-shapes: controlplane $(CLIENTGO)
	$(PY) -m bench.bench_shapes $(if $(BEFORE),--before $(BEFORE) --rounds-only)

bench-limits: controlplane
	$(PY) -m bench.bench_limits

# The container image, built with buildah (Containerfile; a stand-in base from Debian's packages
# where no registry is reachable) and checked: user, entry point, labels, --help as that user.
image:
	scripts/build_image.sh

# 64 callers sending 1-50 rule requests for a minute: results lost or duplicated, errors by
# kind, latency, server RSS. Results: bench/results/load.{json,md}.
bench-load: controlplane
	$(PY) -m bench.bench_load

# Not part of `make test`: a coverage-guided run (atheris) over rule parsing and building, for
# FUZZ_SECONDS; it prints libFuzzer's figures (execs, coverage) and stops at the first crash.
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,fuzz]'
	mkdir -p .fuzz/corpus
	$(PY) -m tests.fuzz.fuzz_rules -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
		-artifact_prefix=.fuzz/ .fuzz/corpus

unit: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The Go client: gofmt, vet, its own tests; buf lint and buf breaking on proto/.
lint-go:
	@unformatted="$$(cd client/go && gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed in client/go: $$unformatted" >&2; exit 1; fi
	cd client/go && go vet ./... && go test ./...
	client/go/scripts/buf-check.sh
	@unformatted="$$(cd bench/clientgo && gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed in bench/clientgo: $$unformatted" >&2; exit 1; fi
	cd bench/clientgo && go vet ./...

clean:
	rm -rf $(VENV) .cluster .pytest_cache .mypy_cache .ruff_cache
