"""The image's entrypoint serves under the pod's constraints, or stops with one clear line.

The command, environment, user home and file copies come from deploy/Dockerfile
itself, so the test follows the image. The process runs with HOME unwritable,
the installation read-only and only a temporary data folder writable (see
tests/_container.py for how, as root); only the listen address and ports are
changed, to 127.0.0.1 and free ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assay.client import Client
from tests._container import ROOT, Dockerfile, Sandbox, make_sandbox
from tests.conftest import SAMPLES

IMAGE = Dockerfile.parse(ROOT / "deploy" / "Dockerfile")
START_DEADLINE_S = 120.0  # loads every bundled model on a shared, busy machine
EXIT_DEADLINE_S = 60.0
LISTENING = re.compile(r"assay listening on 127\.0\.0\.1:(\d+)")


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
        pytest.skip("cannot confine a process here: " + "; ".join(failures))
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
def test_entrypoint_serves_with_only_the_data_volume_writable(
    sandbox: Sandbox, volume: Path, store: str, request: pytest.FixtureRequest
) -> None:
    env = image_env(volume)  # the image alone: SQLite in the data volume
    if store == "postgres":  # as in the k8s Deployment
        env |= k8s_store_env(request.getfixturevalue("postgres_url"))
    server = sandbox.popen(IMAGE.local_argv(IMAGE.command), env)
    output = Output(server)
    try:
        port = wait_listening(server, output)
        wait_serving(port)
        with Client(f"127.0.0.1:{port}") as client:
            (prediction,) = client.predict("digits_cnn", [SAMPLES[0]], top_k=1)
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
    assert "Traceback" not in output.text


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
