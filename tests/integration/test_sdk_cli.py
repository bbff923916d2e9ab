"""The SDK (sync + async), the CLI and the process lifecycle against real servers."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import assay.client as sdk
from assay.client._background import BackgroundServer
from assay.client.cli import app as cli_app
from assay.server.app import AssayServer
from tests.conftest import ROOT, SAMPLES, demo_settings


@pytest.fixture(scope="module")
def background() -> Iterator[AssayServer]:
    with BackgroundServer(demo_settings()) as server:
        yield server


def test_sync_client_accepts_paths_bytes_arrays_and_pil(background: AssayServer) -> None:
    path = SAMPLES[0]
    pixels = np.asarray(Image.open(path).convert("L"))
    with sdk.Client(f"127.0.0.1:{background.port}") as client:
        results = client.predict(
            "digits_cnn",
            [path, path.read_bytes(), pixels, Image.open(path)],
            top_k=3,
            outputs=["features"],
        )
        assert len({r.label for r in results}) == 1 and results[0].label == path.name[0]
        assert results[0].id == str(path) and results[1].id == ""
        assert results[0].outputs["features"].shape == (64,)
        assert all(len(r.top_k) == 3 for r in results)
        info = client.get_model("digits_cnn")
        assert info.preprocessing.color == "gray" and info.task == "classifier"
        assert client.is_serving() and client.is_serving("assay.model.digits_cnn")
        with pytest.raises(sdk.NotFoundError):
            client.predict("missing", [path])
        with pytest.raises(sdk.InvalidArgumentError):
            client.predict("digits_cnn", [b"junk"])


async def test_async_client(background: AssayServer) -> None:
    async with sdk.AsyncClient(f"127.0.0.1:{background.port}") as client:
        models = await client.list_models()
        assert [m.name for m in models] == ["digits_cnn"]
        results = await client.predict("digits_cnn", SAMPLES[:4])
        assert [r.label for r in results] == [p.name[0] for p in SAMPLES[:4]]
        with pytest.raises(sdk.ResourceExhaustedError):
            await client.predict("digits_cnn", [np.zeros((7000, 7000, 1), np.uint8)])


def test_unreachable_server_is_unavailable_after_retries() -> None:
    with (
        sdk.Client("127.0.0.1:1", timeout_s=5, retries=2) as client,
        pytest.raises(sdk.UnavailableError),
    ):
        client.list_models()


def test_cli_models_and_predict(background: AssayServer) -> None:
    runner = CliRunner()
    target = f"127.0.0.1:{background.port}"
    listed = runner.invoke(cli_app, ["models", "--target", target, "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)[0]["name"] == "digits_cnn"
    paths = [str(p) for p in SAMPLES[:3]]
    predicted = runner.invoke(
        cli_app, ["predict", "--model", "digits_cnn", "--target", target, "--json", *paths]
    )
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.output)
    assert [r["top_k"][0]["label"] for r in rows] == [p.name[0] for p in SAMPLES[:3]]
    missing = runner.invoke(cli_app, ["predict", "--model", "nope", "--target", target, paths[0]])
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output


def test_cli_health(background: AssayServer) -> None:
    runner = CliRunner()
    target = f"127.0.0.1:{background.port}"
    ok = runner.invoke(cli_app, ["health", "--target", target])
    assert ok.exit_code == 0 and "SERVING" in ok.output
    model = runner.invoke(
        cli_app, ["health", "--target", target, "--service", "assay.model.digits_cnn"]
    )
    assert model.exit_code == 0
    unknown = runner.invoke(
        cli_app, ["health", "--target", target, "--service", "assay.model.nope"]
    )
    assert unknown.exit_code == 1 and "NOT_FOUND" in unknown.output
    assert "no health status named 'assay.model.nope'" in unknown.output
    assert "_InactiveRpcError" not in unknown.output
    down = runner.invoke(cli_app, ["health", "--target", "127.0.0.1:1", "--timeout-s", "1"])
    assert down.exit_code == 1


def test_serve_drains_and_exits_cleanly_on_sigterm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "ASSAY_GRPC__PORT": "0",
        "ASSAY_METRICS__PORT": "0",
        "ASSAY_GRPC__GRACE_PERIOD_S": "5",
        "ASSAY_DATA__DIR": str(tmp_path / "data"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "assay.client", "serve"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        seen = []
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            assert line or proc.poll() is None, "server exited early:\n" + "".join(seen)
            match = re.search(r"assay listening on [\d.]+:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port, "server did not report its port"
        with sdk.Client(f"127.0.0.1:{port}") as client:
            assert client.predict("digits_cnn", SAMPLES[:1])[0].label == SAMPLES[0].name[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_demo_command_runs_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "assay.client", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200", "ASSAY_DATA__DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "digits_cnn: 20/20 sample digits correct" in result.stdout
    assert "grpc_server_handled_total" in result.stdout
    assert "AI-generated image detection" in result.stdout
    assert "report written to assay-aigen-report.html" in result.stderr
    # The demo's data folder was temporary, so the next steps refit the detector.
    assert "assay aigen fit --detector aigen_demo" in result.stdout
    assert "were in a temporary folder, now deleted" in result.stdout
