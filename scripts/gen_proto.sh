#!/usr/bin/env bash
# Regenerates the Python stubs beside their .proto files (proto/assay/v1/).
# One command, so CI can check that the committed stubs are current.
#
# The generator is pinned (grpcio-tools 1.72.2 in pyproject's dev extra): its
# protoc emits protobuf 6.30 gencode, which every protobuf 6.30+ and 7.x runtime
# loads, so assay installs beside tritonclient (protobuf<7) and beside 7.x.
# google/rpc/status.proto comes from the googleapis-common-protos package that
# provides google.rpc.status_pb2 at run time, so the two cannot drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"
want=1.72.2
have=$("$PY" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))')
if [ "$have" != "$want" ]; then
  echo "gen_proto.sh: grpcio-tools $want is pinned (protobuf 6.30 gencode), found $have" >&2
  exit 1
fi
include=$(mktemp -d)
trap 'rm -rf "$include"' EXIT
mkdir -p "$include/google/rpc"
"$PY" - "$include/google/rpc/status.proto" <<'PYEOF'
import shutil, sys
from pathlib import Path
import google.rpc.status_pb2 as status
shutil.copy(Path(status.__file__).with_name("status.proto"), sys.argv[1])
PYEOF
rm -f proto/assay/v1/*_pb2*.py proto/assay/v1/*_pb2*.pyi
"$PY" -m grpc_tools.protoc -Iproto -I"$include" \
  --python_out=proto --grpc_python_out=proto \
  --mypy_out=proto --mypy_grpc_out=proto \
  proto/assay/v1/*.proto
