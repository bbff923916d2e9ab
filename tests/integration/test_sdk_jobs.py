"""The SDK's job handles, typed reports and the OOD/anomaly methods, sync and async, against a
real server (BackgroundServer: real grpc.aio on port 0, onnxruntime), and the CLI commands
built on them. Every test runs on both store engines (SQLite, PostgreSQL): jobs, reports and
profiles all go through the store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import assay.client as sdk
from assay.client._background import BackgroundServer
from assay.client.cli import app as cli_app
from assay.server.app import AssayServer
from tests.conftest import ENGINES, ROOT, demo_settings, engine_data

SAMPLES_ROOT = ROOT / "deploy" / "samples"
HELDOUT = SAMPLES_ROOT / "digits_heldout"
TILES = SAMPLES_ROOT / "ood" / "anomaly" / "tiles"
GOOD = sorted((TILES / "test" / "good").glob("*.png"))
DEFECTS = sorted((TILES / "test" / "defect").glob("*.png"))
MODEL = "digits_cnn"


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder whose images cannot be decoded: a fit on it fails with INVALID_ARGUMENT."""
    root = tmp_path_factory.mktemp("broken")
    (root / "3").mkdir()
    for i in range(4):
        (root / "3" / f"{i}.png").write_bytes(b"not a png at all")
    return root


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest, broken: Path) -> Iterator[AssayServer]:
    """One server per engine for the module (the tests share it, as clients share a server)."""
    with engine_data(request, request.param) as store:
        settings = demo_settings(data={"roots": [str(SAMPLES_ROOT), str(broken)], **store})
        with BackgroundServer(settings) as app:
            yield app


def target(server: AssayServer) -> str:
    return f"127.0.0.1:{server.port}"


def slow_suite(client: sdk.Client) -> sdk.Job:
    """A robustness job that runs for minutes unless cancelled."""
    return client.start_evaluation(MODEL, str(HELDOUT), "standard", sample_limit=100)


def test_sync_job_wait_anomaly_signal_typed_report_and_delete_profile(
    server: AssayServer,
) -> None:
    with sdk.Client(target(server)) as client:
        job = client.fit_profile(MODEL, str(TILES / "train"), scorers=["patchcore"])
        assert isinstance(job, sdk.Job) and job.state in ("pending", "running")
        done = job.wait(timeout_s=300)
        assert isinstance(done, sdk.Job) and done.id == job.id
        assert done.state is sdk.JobState.SUCCEEDED and done.state == "succeeded"
        summary = client.get_report(done.id)
        assert isinstance(summary, sdk.Report) and summary.job_id == done.id
        # a fit's summary names no schema (the server drops it), so only the model is typed
        assert summary.model == MODEL and summary["default_scorer"] == "patchcore"

        images = GOOD[:3] + DEFECTS[:3]
        predictions = client.predict(MODEL, images, signals=["anomaly"])
        detected = client.detect_anomaly(MODEL, images)
        for prediction, anomaly in zip(predictions, detected, strict=True):
            (signal,) = prediction.anomaly
            assert signal.scorer == "patchcore" and prediction.ood == []
            assert signal.score == pytest.approx(anomaly.score, rel=1e-6)
            assert (signal.threshold, signal.is_ood) == (anomaly.threshold, anomaly.is_anomalous)
            assert signal.holdout_tail == pytest.approx(anomaly.holdout_tail)

        deleted = client.delete_profile(MODEL)
        assert isinstance(deleted, sdk.OodProfileInfo) and deleted.model == MODEL
        assert list(deleted.thresholds) == ["patchcore"]
        assert client.list_profiles(MODEL) == []
        with pytest.raises(sdk.NotFoundError):
            client.delete_profile(MODEL)
        with pytest.raises(sdk.FailedPreconditionError):
            client.predict(MODEL, images[:1], signals=["anomaly"])


def test_sync_wait_raises_typed_errors_for_failed_cancelled_and_late_jobs(
    server: AssayServer, broken: Path
) -> None:
    with sdk.Client(target(server)) as client:
        failing = client.fit_profile(MODEL, str(broken))
        with pytest.raises(sdk.JobFailedError) as failed:
            failing.wait(timeout_s=120)
        assert failed.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.job is not None and failed.value.job.state is sdk.JobState.FAILED
        assert failed.value.job_id == failing.id and failed.value.details == failed.value.job.error

        slow = slow_suite(client)
        with pytest.raises(sdk.JobTimeoutError) as late:
            slow.wait(timeout_s=0.5)
        assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert not client.get_job(slow.id).finished  # the timeout ends the wait, not the job
        assert client.cancel_job(slow.id).state is sdk.JobState.CANCELLED
        with pytest.raises(sdk.JobCancelledError) as cancelled:
            slow.wait(timeout_s=60)
        assert cancelled.value.code is grpc.StatusCode.CANCELLED
        listed = client.list_jobs(states=[sdk.JobState.CANCELLED])
        assert slow.id in [j.id for j in listed] and all(isinstance(j, sdk.Job) for j in listed)
        with pytest.raises(sdk.FailedPreconditionError):
            client.get_report(slow.id)


async def test_async_detect_anomaly_evaluate_anomaly_and_delete_profile(
    server: AssayServer,
) -> None:
    async with sdk.AsyncClient(target(server)) as client:
        fit = await client.fit_profile(MODEL, str(TILES / "train"), scorers=["patchcore"])
        assert isinstance(fit, sdk.AsyncJob)
        assert (await fit.wait(timeout_s=300)).state is sdk.JobState.SUCCEEDED

        results = await client.detect_anomaly(MODEL, GOOD + DEFECTS, with_maps=True)
        assert all(r.map is not None and r.map.shape == (28, 28) for r in results)
        assert all(r.is_anomalous == (r.score > r.threshold) for r in results)
        scores = np.array([r.score for r in results])
        labels = np.r_[np.zeros(len(GOOD)), np.ones(len(DEFECTS))]

        evaluation = await client.evaluate_anomaly(MODEL, str(TILES))
        done = await evaluation.wait(timeout_s=300)
        assert isinstance(done, sdk.AsyncJob) and done.kind == "anomaly_evaluation"
        report = await client.get_report(done.id)
        assert isinstance(report, sdk.Report) and report.job_id == evaluation.id
        assert (report.schema, report.model) == ("assay.anomaly.evaluation/v1", MODEL)
        assert report["dataset"]["good"] == len(GOOD)
        assert sum(report["dataset"]["defect"].values()) == len(DEFECTS)
        # the job scores the same images with the same memory as DetectAnomaly
        assert report["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)

        deleted = await client.delete_profile(MODEL)
        assert deleted.model == MODEL and "patchcore" in deleted.thresholds
        with pytest.raises(sdk.NotFoundError):
            await client.delete_profile(MODEL)
        with pytest.raises(sdk.FailedPreconditionError):
            await client.detect_anomaly(MODEL, DEFECTS[:1])


async def test_async_wait_raises_typed_errors(server: AssayServer, broken: Path) -> None:
    async with sdk.AsyncClient(target(server)) as client:
        failing = await client.fit_profile(MODEL, str(broken))
        with pytest.raises(sdk.JobFailedError) as failed:
            await failing.wait(timeout_s=120)
        assert failed.value.code is grpc.StatusCode.INVALID_ARGUMENT

        slow = await client.start_evaluation(MODEL, str(HELDOUT), "standard", sample_limit=100)
        with pytest.raises(sdk.JobTimeoutError):
            await slow.wait(timeout_s=0.5)
        assert not (await client.get_job(slow.id)).finished
        await client.cancel_job(slow.id)
        with pytest.raises(sdk.JobCancelledError):
            await (await client.get_job(slow.id)).wait()


def test_cli_anomaly_evaluate_and_ood_delete_profile(server: AssayServer, tmp_path: Path) -> None:
    runner = CliRunner()
    where = ["--target", target(server)]
    fitted = runner.invoke(
        cli_app, ["anomaly", "fit", "--model", MODEL, "--data", str(TILES / "train"), *where]
    )
    assert fitted.exit_code == 0, fitted.output
    out = tmp_path / "anomaly.json"
    evaluated = runner.invoke(
        cli_app,
        ["anomaly", "evaluate", "--model", MODEL, "--data", str(TILES), "--out", str(out), *where],
    )
    assert evaluated.exit_code == 0, evaluated.output
    written = sdk.Report("", json.loads(out.read_text()))
    assert written.schema == "assay.anomaly.evaluation/v1"
    shown = re.search(r"image AUROC\W+([0-9.]+)", evaluated.output)
    assert shown is not None and shown.group(1) == f"{written['image_auroc']:.3f}"
    counts = re.search(r"images \(good, defective\)\W+(\d+), (\d+)", evaluated.output)
    assert counts is not None and counts.groups() == (str(len(GOOD)), str(len(DEFECTS)))

    deleted = runner.invoke(cli_app, ["ood", "delete-profile", MODEL, *where])
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted the OOD profile of {MODEL}" in deleted.output and "patchcore" in deleted.output
    again = runner.invoke(cli_app, ["ood", "delete-profile", MODEL, *where])
    assert again.exit_code == 1 and "NOT_FOUND" in again.output


def test_jobs_are_cancelled_and_deleted_through_the_sdk_and_the_cli(server: AssayServer) -> None:
    runner, where = CliRunner(), ["--target", target(server)]
    with sdk.Client(target(server)) as client:
        live = slow_suite(client)
        with pytest.raises(sdk.FailedPreconditionError, match="cancel it first"):
            client.delete_job(live.id)
        cancelled = runner.invoke(cli_app, ["jobs", "cancel", live.id, *where])
        assert cancelled.exit_code == 0, cancelled.output
        assert live.id in cancelled.output and "cancelled" in cancelled.output
        deleted = runner.invoke(cli_app, ["jobs", "delete", live.id, *where])
        assert deleted.exit_code == 0, deleted.output
        assert f"deleted job {live.id} (robustness, cancelled)" in deleted.output
        with pytest.raises(sdk.NotFoundError):
            client.get_job(live.id)
        gone = runner.invoke(cli_app, ["jobs", "delete", live.id, *where])
        assert gone.exit_code == 1 and "NOT_FOUND" in gone.output

        other = slow_suite(client)
        client.cancel_job(other.id)
        info = client.delete_job(other.id)
        assert isinstance(info, sdk.JobInfo) and (info.id, info.state) == (other.id, "cancelled")
        assert other.id not in [j.id for j in client.list_jobs()]
    wrong = runner.invoke(cli_app, ["jobs", "remove", "x", *where])
    assert wrong.exit_code == 2 and "cancel ID" in wrong.output


async def test_async_delete_job(server: AssayServer) -> None:
    async with sdk.AsyncClient(target(server)) as client:
        job = await client.start_evaluation(MODEL, str(HELDOUT), "standard", sample_limit=100)
        with pytest.raises(sdk.FailedPreconditionError):
            await client.delete_job(job.id)
        await client.cancel_job(job.id)
        deleted = await client.delete_job(job.id)
        assert deleted.id == job.id and deleted.state is sdk.JobState.CANCELLED
        with pytest.raises(sdk.NotFoundError):
            await client.delete_job(job.id)
