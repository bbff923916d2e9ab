"""The image's entrypoint serves under the pod's constraints, or stops with one clear line.

The command, environment, user home and file copies come from deploy/Dockerfile
itself, so the test follows the image. The process runs with HOME unwritable,
the installation read-only and only a temporary data folder writable (see
tests/_container.py for how, as root); only the listen address and ports are
changed, to 127.0.0.1 and free ports, and the sample datasets are its data
root. A machine that can confine it neither way fails the tests, saying why.

Under those constraints it answers Predict and its HEALTHCHECK, and runs real
jobs: a robustness suite through its corruption worker processes and an OOD
profile fit. Nothing may be written elsewhere: the read-only mounts make any
such write fail (the server log must hold no such error) and the checkout, the
Python environment and HOME must look as they did before.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assay.client import Client
from tests._container import ROOT, Dockerfile, Sandbox, make_sandbox
from tests.conftest import SAMPLES
from tests.integration.test_no_orphans import helpers

IMAGE = Dockerfile.parse(ROOT / "deploy" / "Dockerfile")
START_DEADLINE_S = 120.0  # loads every bundled model on a shared, busy machine
EXIT_DEADLINE_S = 60.0
LISTENING = re.compile(r"assay listening on 127\.0\.0\.1:(\d+)")
JOB_DEADLINE_S = 300.0
WORKERS = 2
HELDOUT = ROOT / "deploy" / "samples" / "digits_heldout"
SUITE: dict[str, Any] = {
    "corruptions": ["gaussian_noise", "contrast"],
    "severities": [1, 3],
    "sample_limit": 32,
}
WRITE_ERRORS = re.compile(
    r"read-only file system|permission denied|errno 30|errno 13|not writable|failed to persist"
    r"|traceback",
    re.IGNORECASE,
)
"""A write outside the data folder, refused by the sandbox (or a crash)."""


class Output:
    """Everything a process prints, collected by a thread so the pipe never fills."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=10)


@pytest.fixture
def volume() -> Iterator[Path]:
    """The data volume and the pod's /tmp, in a folder any user may enter."""
    folder = Path(tempfile.mkdtemp(prefix="assay-container-"))
    folder.chmod(0o755)
    (folder / "data").mkdir()
    (folder / "tmp").mkdir()
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.fixture
def sandbox(volume: Path) -> Sandbox:
    found, failures = make_sandbox(volume, IMAGE)
    if found is None:
        pytest.fail(
            "cannot confine the server as the pod does: this machine lacks both mount namespaces"
            " (`unshare --mount` as root, or unprivileged user namespaces) and, as root, a"
            f" checkout and interpreter that uid {IMAGE.user[0]} can read. Tried: "
            + "; ".join(failures),
            pytrace=False,
        )
    return found


def image_env(volume: Path, *, data_dir: bool = True) -> dict[str, str]:
    """The image's environment, with the data volume and local addresses swapped in."""
    assert IMAGE.env["ASSAY_DATA__DIR"] in IMAGE.volumes  # the data folder is the volume
    env = {
        "PATH": f"{Path(IMAGE.local_argv(IMAGE.command)[0]).parent}:{os.defpath}",
        "HOME": IMAGE.home,
        "LANG": "C.UTF-8",
        "TMPDIR": str(volume / "tmp"),
        **IMAGE.env,
        "ASSAY_GRPC__HOST": "127.0.0.1",
        "ASSAY_METRICS__HOST": "127.0.0.1",
        "ASSAY_GRPC__PORT": "0",
        "ASSAY_METRICS__PORT": "0",
        "ASSAY_DATA__DIR": str(volume / "data"),
        "ASSAY_DATA__ROOTS": json.dumps([str(HELDOUT.parent)]),  # read-only, like a mounted set
        "ASSAY_JOBS__WORKERS": str(WORKERS),
    }
    if not data_dir:
        del env["ASSAY_DATA__DIR"]
    if "PYTHONPATH" in os.environ:  # a checkout used without installing it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def k8s_store_env(postgres_url: str) -> dict[str, str]:
    """The assay Deployment's environment, its Secret pointing at the test's PostgreSQL."""
    deployment = yaml.safe_load((ROOT / "deploy/k8s/assay-deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    secret = {"url": postgres_url, "password": "unused-the-test-server-trusts-127.0.0.1"}
    env = {}
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        env[entry["name"]] = secret[ref["key"]] if ref else str(entry["value"])
    assert env.pop("ASSAY_DATA__DIR") == IMAGE.env["ASSAY_DATA__DIR"]  # the same volume
    return env


def snapshot() -> dict[str, tuple[int, int]]:
    """(mtime, size) of the checkout's code and data files and folders, and of the Python
    environment's folders (a folder's mtime changes when an entry is added or removed).
    The environment's __pycache__ folders are left out: other processes share it."""
    found = {}
    for top in ("server", "client", "proto", "deploy"):
        for folder, dirs, files in os.walk(ROOT / top):
            for name in [".", *dirs, *files]:
                stat = os.lstat(os.path.join(folder, name))
                found[os.path.join(folder, name)] = (stat.st_mtime_ns, stat.st_size)
    for folder, dirs, _ in os.walk(sys.prefix):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found[folder] = (os.stat(folder).st_mtime_ns, 0)
    return found


def run_jobs(client: Client, server_pid: int) -> None:
    """A robustness suite through the corruption workers, and an OOD profile fit."""
    suite = client.start_evaluation("digits_cnn", str(HELDOUT), "standard", **SUITE)
    report = client.get_report(suite.wait(JOB_DEADLINE_S).id)
    assert set(report["corruptions"]) == set(SUITE["corruptions"]), report.raw
    forkserver, _, workers = helpers(server_pid)  # the suite ran in these
    assert len(forkserver) == 1 and len(workers) == WORKERS, (forkserver, workers)
    fit = client.fit_profile("digits_cnn", str(HELDOUT), sample_limit=120, seed=1)
    fit.wait(JOB_DEADLINE_S)
    (profile,) = client.list_profiles("digits_cnn")
    assert profile.thresholds and not profile.problem, profile


def wait_listening(process: subprocess.Popen[str], output: Output) -> int:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if found := LISTENING.search(output.text):
            return int(found.group(1))
        if process.poll() is not None:
            output.join()
            pytest.fail(f"the server exited {process.returncode}:\n{output.text}")
        time.sleep(0.05)
    pytest.fail(f"not listening after {START_DEADLINE_S}s:\n{output.text}")


def wait_serving(port: int) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.1)
    pytest.fail(f"not SERVING after {START_DEADLINE_S}s")


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_entrypoint_serves_and_runs_jobs_with_only_the_data_volume_writable(
    sandbox: Sandbox,
    volume: Path,
    store: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = image_env(volume)  # the image alone: SQLite in the data volume
    if store == "postgres":  # as in the k8s Deployment
        env |= k8s_store_env(request.getfixturevalue("postgres_url"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # this process writes nothing either
    assert not Path(IMAGE.home).exists()
    before = snapshot()
    server = sandbox.popen(IMAGE.local_argv(IMAGE.command), env)
    output = Output(server)
    try:
        port = wait_listening(server, output)
        wait_serving(port)
        with Client(f"127.0.0.1:{port}") as client:
            (prediction,) = client.predict("digits_cnn", [SAMPLES[0]], top_k=1)
            run_jobs(client, server.pid)
        assert prediction.top_k[0].label == SAMPLES[0].name[0]
        # The image's HEALTHCHECK, under the same constraints.
        check = sandbox.popen(
            [*IMAGE.local_argv(IMAGE.healthcheck), "-t", f"127.0.0.1:{port}"], env
        )
        assert check.communicate(timeout=EXIT_DEADLINE_S)[0].strip() == "SERVING"
        assert check.returncode == 0
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=EXIT_DEADLINE_S) == 0, output.text
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output.join()
    # Its state went to the data volume: the uploads folder, and the SQLite store if no other.
    data = volume / "data"
    assert (data / "datasets").is_dir(), output.text
    assert bool(list(data.glob("*.sqlite3"))) == (store == "sqlite"), output.text
    refused = [line for line in output.lines if WRITE_ERRORS.search(line)]
    assert not refused, output.text
    after = snapshot()
    changed = sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )
    assert not changed, changed
    assert not Path(IMAGE.home).exists()
    print(f"confined by {sandbox.how}: {len(before)} paths unchanged")


def test_without_a_data_folder_it_exits_at_once_naming_the_folder_and_setting(
    sandbox: Sandbox, volume: Path
) -> None:
    started = time.monotonic()
    server = sandbox.popen(IMAGE.local_argv(IMAGE.command), image_env(volume, data_dir=False))
    try:
        text, _ = server.communicate(timeout=EXIT_DEADLINE_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    elapsed = time.monotonic() - started
    assert server.returncode != 0, text
    default = f"{IMAGE.home}/.local/share/assay"
    assert f"cannot write the data folder {default} (data.dir is unset" in text, text
    assert "set ASSAY_DATA__DIR (data.dir) to a writable folder" in text
    assert "Traceback" not in text
    print(f"exited {server.returncode} after {elapsed:.1f}s")
