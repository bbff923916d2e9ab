#!/usr/bin/env bash
# Regenerates the Python stubs beside their .proto files (proto/assay/v1/).
# One command, so CI can check that the committed stubs are current.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"
rm -f proto/assay/v1/*_pb2*.py proto/assay/v1/*_pb2*.pyi
"$PY" -m grpc_tools.protoc -Iproto \
  --python_out=proto --grpc_python_out=proto \
  --mypy_out=proto --mypy_grpc_out=proto \
  proto/assay/v1/*.proto
