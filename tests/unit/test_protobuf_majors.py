"""The committed stubs load and round-trip on protobuf 6.30 (the pin's floor), 7.x and
the installed runtime, beside tritonclient's own stubs where its gencode allows.

The other runtimes are `pip install --target` folders made by `make protobuf-runtimes`
(a dependency of `make test`), put first on sys.path of a child interpreter, so one
venv tests every major in a few seconds.
"""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIMES = ROOT / ".proto-compat"
FLOOR, SEVEN = "6.30.0", "7.36.2"  # keep in step with PROTOBUF_RUNTIMES in the Makefile

CHECK = r"""
import importlib, pkgutil, sys
import google.protobuf
from google.rpc import status_pb2

expected, with_triton = sys.argv[1], sys.argv[2] == "1"
assert google.protobuf.__version__ == expected, (google.protobuf.__version__, expected)
import assay.v1
names = sorted(m.name for m in pkgutil.iter_modules(assay.v1.__path__) if "_pb2" in m.name)
modules = [importlib.import_module("assay.v1." + n) for n in names]
assert len(names) == 16, names
from assay.v1 import jobs_pb2, models_pb2, ood_pb2

job = jobs_pb2.Job(id="j", state=jobs_pb2.JOB_STATE_FAILED)
job.error.CopyFrom(status_pb2.Status(code=3, message="label 'x' is unknown"))
job.created_at.FromNanoseconds(1_700_000_000_123_456_789)
again = jobs_pb2.Job.FromString(job.SerializeToString())
assert again == job and again.error.code == 3 and again.created_at.nanos == 123_456_789
page = models_pb2.ListModelsResponse(next_page_token="t")
page.models.add(name="m", version="1")
assert models_pb2.ListModelsResponse.FromString(page.SerializeToString()) == page
assert ood_pb2.AnomalyMapFormat.Name(3) == "ANOMALY_MAP_FORMAT_NONE"
for module in modules:  # every message type of every file survives the wire
    if not hasattr(module, "DESCRIPTOR"):
        continue  # a _pb2_grpc module: imported above, which runs its grpcio check
    for message in module.DESCRIPTOR.message_types_by_name:
        cls = getattr(module, message)
        assert cls.FromString(cls().SerializeToString()) == cls()
if with_triton:
    from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: F401
    request = service_pb2.ModelInferRequest(model_name="digits_cnn", id="1")
    assert service_pb2.ModelInferRequest.FromString(request.SerializeToString()) == request
print(google.protobuf.__version__, len(names))
"""


def _run(path_first: list[Path], expected: str, with_triton: bool) -> str:
    env = dict(os.environ)
    roots = [ROOT / "proto", ROOT / "server", ROOT / "client"]
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [*path_first, *roots])
    done = subprocess.run(
        [sys.executable, "-c", CHECK, expected, "1" if with_triton else "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("version", "with_triton"),
    # tritonclient 2.73's own stubs are 6.33.5 gencode: they need a runtime >= 6.33.5.
    [(FLOOR, False), (SEVEN, True)],
)
def test_stubs_load_on_another_protobuf_runtime(version: str, with_triton: bool) -> None:
    folder = RUNTIMES / f"protobuf-{version}"
    if not (folder / ".complete").exists():
        pytest.skip(f"{folder} is missing: run `make protobuf-runtimes`")
    assert _run([folder], version, with_triton).split() == [version, "16"]


def test_stubs_load_on_the_installed_runtime_beside_tritonclient() -> None:
    installed = importlib.metadata.version("protobuf")
    assert _run([], installed, True).split() == [installed, "16"]


def test_the_install_resolved_a_current_tritonclient() -> None:
    # Users with a current tritonclient can install assay beside it (issue: 2.41 was forced).
    major, minor = (int(p) for p in importlib.metadata.version("tritonclient").split(".")[:2])
    assert (major, minor) >= (2, 73)
    protobuf_major = int(importlib.metadata.version("protobuf").split(".")[0])
    assert protobuf_major in (6, 7)
