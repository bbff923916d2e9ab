# assay — two commands for a newcomer: `make demo` and `make test`.
# Each creates .venv and installs what it needs on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test proto lint buf-lint protobuf-runtimes bench bench-env models serve triton triton-env clean promtool postgresql mutation

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PIP) -e '.[report]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.runtime

$(VENV)/.train: pyproject.toml | $(PY)
	$(PIP) -e '.[dev,train]'
	touch $@ $(VENV)/.dev $(VENV)/.runtime

## demo: install the runtime and run the main job on the bundled demo models
demo: $(VENV)/.runtime
	@if $(PY) -c 'import torch, efficientnet_lite_pytorch' 2>/dev/null; then \
	  test -f deploy/triton/model_repository/efficientnet_lite0/1/model.onnx || \
	    $(PY) deploy/models/import_efficientnet.py; \
	else \
	  echo "demo: the train extra (torch + EfficientNet packages) is not installed, so EfficientNet-Lite0 is not built; make models builds it"; \
	fi
	$(VENV)/bin/assay demo

## test: install dev tools, promtool, PostgreSQL and a local Triton, lint the contract, then run every test tier
test: $(VENV)/.dev promtool postgresql triton-env buf-lint protobuf-runtimes
	$(PY) -m pytest

## triton-env: the Triton venv (.venv-triton), its Python backend and the CPU test repository
triton-env: $(VENV)/.dev
	$(PY) deploy/triton/local_triton.py prepare

## triton: run a real tritonserver on 127.0.0.1:8001 (HTTP 8000, metrics 8002); Ctrl-C stops it
triton: $(VENV)/.dev
	$(PY) deploy/triton/local_triton.py serve

promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus package for promtool"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

# The store tests start their own throwaway server from these binaries (tests/_postgres.py);
# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<major>/bin, off PATH.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql package for the store tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

## proto: regenerate the Python stubs beside the .proto files
proto: $(VENV)/.dev
	PYTHON=$(PY) scripts/gen_proto.sh

## lint: ruff (lint + format check) and mypy on the hand-written code, buf lint on the contract
lint: $(VENV)/.dev buf-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# buf from npm, pinned, in the gitignored .buf/ (no global install, no BSR access needed).
BUF_VERSION := 1.75.0
BUF := .buf/node_modules/.bin/buf
BUF_STATUS := .buf/include/google/rpc/status.proto

.buf/.installed-$(BUF_VERSION):
	npm install --silent --no-audit --no-fund --prefix .buf @bufbuild/buf@$(BUF_VERSION)
	touch $@

# buf.yaml's second module: the Status proto that googleapis-common-protos ships.
$(BUF_STATUS): $(VENV)/.dev
	mkdir -p $(@D)
	$(PY) -c 'import shutil, sys, pathlib, google.rpc.status_pb2 as s; shutil.copy(pathlib.Path(s.__file__).with_name("status.proto"), sys.argv[1])' $@

## buf-lint: buf lint (STANDARD + RPC/service comments; exceptions with reasons in buf.yaml)
buf-lint: .buf/.installed-$(BUF_VERSION) $(BUF_STATUS)
	$(BUF) lint

# The other protobuf runtimes the stubs must load on (tests/unit/test_protobuf_majors.py):
# the floor of the pin and a 7.x release, each with a matching googleapis-common-protos.
PROTOBUF_RUNTIMES := 6.30.0 7.36.2

.proto-compat/protobuf-%/.complete: | $(PY)
	rm -rf $(@D)
	$(PIP) --no-warn-conflicts --target $(@D) protobuf==$* googleapis-common-protos
	touch $@

## protobuf-runtimes: install those runtimes into the gitignored .proto-compat/
protobuf-runtimes: $(foreach v,$(PROTOBUF_RUNTIMES),.proto-compat/protobuf-$(v)/.complete)

## mutation: mutation testing of stats/, the threshold code and the batcher (slow, minutes; not in `make test`)
mutation: $(VENV)/.dev
	$(PY) scripts/mutate.py --jobs 2

## bench: every benchmark; each prints its ratio last
bench: $(VENV)/.dev triton-env bench-env
	$(PY) -m bench.serving
	$(PY) -m bench.triton
	$(PY) -m bench.suite
	$(PY) -m bench.ood
	$(PY) -m bench.aigen
	$(PY) -m bench.store
	$(PY) -m bench.upload_stall
	.venv-bench/bin/python -m bench.corruptions

## bench-env: .venv-bench, the dev install plus the imagecorruptions reference (bench only)
bench-env: .venv-bench/.installed
.venv-bench/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' imagecorruptions-imaug
	touch $@

## models: retrain the demo classifier and import EfficientNet-Lite0 (needs the train extra)
models: $(VENV)/.train
	$(PY) deploy/models/train_demo.py
	$(PY) deploy/models/train_aigen_demo.py
	$(PY) deploy/models/import_efficientnet.py
	$(PY) deploy/models/make_samples.py

## serve: serve the bundled demo models on 127.0.0.1:50051 (metrics on :9464)
serve: $(VENV)/.runtime
	$(VENV)/bin/assay serve

clean:
	rm -rf $(VENV) .venv-triton .venv-bench .triton .pytest_cache .ruff_cache .mypy_cache .buf .proto-compat
