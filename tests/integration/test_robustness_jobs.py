"""Robustness suites over the real gRPC stack with the real demo model.

The job lifecycle tests (start, watch, report, cancel, upload then evaluate, resume
after kill -9) run on both store engines (`job_app`, `server_store`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from sklearn.metrics import accuracy_score

from assay.server.app import AssayServer, create_server
from assay.v1 import (
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    robustness_pb2,
    robustness_pb2_grpc,
)
from tests.conftest import ROOT, SAMPLES, demo_settings

HELDOUT = ROOT / "deploy" / "samples" / "digits_heldout"
SMALL_SUITE = robustness_pb2.Suite(
    preset="quick",
    corruptions=["gaussian_noise", "contrast"],
    severities=[1, 5],
    perturbations=["translate", "gaussian_noise"],
    sample_limit=60,
)


@pytest.fixture
async def app() -> AssayServer:  # type: ignore[misc]
    server = await create_server(demo_settings(data={"roots": [str(ROOT / "deploy" / "samples")]}))
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
async def job_app(server_store: dict[str, str]) -> AssayServer:  # type: ignore[misc]
    """`app` once on each store engine."""
    data = {"roots": [str(ROOT / "deploy" / "samples")], **server_store}
    server = await create_server(demo_settings(data=data))
    await server.start()
    yield server
    await server.stop(0)


def stubs(
    channel: grpc.aio.Channel,
) -> tuple[robustness_pb2_grpc.RobustnessServiceStub, jobs_pb2_grpc.JobServiceStub]:
    return robustness_pb2_grpc.RobustnessServiceStub(channel), jobs_pb2_grpc.JobServiceStub(channel)


def start_request(
    suite: robustness_pb2.Suite = SMALL_SUITE, dataset: Path = HELDOUT
) -> robustness_pb2.StartEvaluationRequest:
    return robustness_pb2.StartEvaluationRequest(
        model=common_pb2.ModelRef(name="digits_cnn"), dataset=str(dataset), suite=suite
    )


async def test_suite_job_streams_progress_and_reports(job_app: AssayServer) -> None:
    app = job_app
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        robustness, jobs = stubs(channel)
        job = await robustness.StartEvaluation(start_request())
        assert job.state in (jobs_pb2.JOB_STATE_PENDING, jobs_pb2.JOB_STATE_RUNNING)
        assert job.total == 1 + 2 * 2 + 2 + 1  # clean, 2x2 corruptions, 2 perturbations, shift
        events = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id))]
        assert events[-1].job.state == jobs_pb2.JOB_STATE_SUCCEEDED, events[-1].job.error
        done = [e.job.done for e in events]
        assert done == sorted(done) and done[-1] == job.total
        assert any(
            json.loads(e.partial_json).get("unit") == "corruption/contrast/5" for e in events
        )
        report = json.loads((await jobs.GetReport(jobs_pb2.GetReportRequest(id=job.id))).json)

    assert report["schema"] == "assay.robustness.report/v1" and report["dataset"]["images"] == 60
    clean = report["clean"]["error"]
    assert clean["low"] <= clean["value"] <= clean["high"]
    noise = report["corruptions"]["gaussian_noise"]["errors"]
    assert noise["5"]["value"] >= noise["1"]["value"], "severity 5 hurts at least as much as 1"
    assert report["mce"] is None, "no baseline for a 10-class model: no mCE"
    flip = report["perturbations"]["gaussian_noise"]
    assert flip["compare_to_first"] and 0 <= flip["flip_rate"]["value"] <= 1
    assert 0 <= report["shift_consistency"]["value"] <= 1
    calibration = report["clean"]["calibration"]
    assert sum(b["count"] for b in calibration["reliability"]) == 60
    assert calibration["temperature"] > 0


async def test_clean_error_equals_an_independent_computation(app: AssayServer) -> None:
    """The report's clean error equals sklearn's on direct predictions of the same images."""
    suite = robustness_pb2.Suite(preset="quick", corruptions=["contrast"], severities=[1],
                                 perturbations=[], shift_consistency=False, sample_limit=450)  # fmt: skip
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        robustness, jobs = stubs(channel)
        job = await robustness.StartEvaluation(start_request(suite))
        [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id))]
        report = json.loads((await jobs.GetReport(jobs_pb2.GetReportRequest(id=job.id))).json)
    from assay.client import AsyncClient

    paths = sorted(HELDOUT.glob("*/*.png"))
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        predictions = []
        for start in range(0, len(paths), 64):
            predictions += await client.predict("digits_cnn", paths[start : start + 64], top_k=1)
    truth = [p.parent.name for p in paths]
    expected_error = 1 - accuracy_score(truth, [p.label for p in predictions])
    assert report["clean"]["error"]["value"] == pytest.approx(expected_error, abs=1e-9)


async def test_cancel_keeps_finished_units_and_report_is_refused(job_app: AssayServer) -> None:
    app = job_app
    suite = robustness_pb2.Suite(preset="standard", sample_limit=100)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        robustness, jobs = stubs(channel)
        job = await robustness.StartEvaluation(start_request(suite))
        async for event in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id)):
            if event.job.done >= 2:
                break
        cancelled = await jobs.CancelJob(jobs_pb2.CancelJobRequest(id=job.id))
        assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED and cancelled.done >= 2
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.GetReport(jobs_pb2.GetReportRequest(id=job.id))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        listed = await jobs.ListJobs(
            jobs_pb2.ListJobsRequest(states=[jobs_pb2.JOB_STATE_CANCELLED])
        )
        assert job.id in [j.id for j in listed.jobs]


BAD = [
    ("unknown corruption", robustness_pb2.Suite(corruptions=["sunburn"]), HELDOUT, grpc.StatusCode.INVALID_ARGUMENT, "unknown corruptions"),
    ("severity 0", robustness_pb2.Suite(severities=[0]), HELDOUT, grpc.StatusCode.INVALID_ARGUMENT, "severities must be 1..5"),
    ("severity 6", robustness_pb2.Suite(severities=[6]), HELDOUT, grpc.StatusCode.INVALID_ARGUMENT, "severities must be 1..5"),
    ("negative epsilon", robustness_pb2.Suite(attacks=[robustness_pb2.Attack(kind=robustness_pb2.ATTACK_KIND_SQUARE_LINF, epsilon=-0.1)]), HELDOUT, grpc.StatusCode.INVALID_ARGUMENT, "epsilon"),
    ("white-box without a copy", robustness_pb2.Suite(attacks=[robustness_pb2.Attack(kind=robustness_pb2.ATTACK_KIND_PGD_LINF, epsilon=0.1)]), HELDOUT, grpc.StatusCode.FAILED_PRECONDITION, "differentiable"),
    ("unknown preset", robustness_pb2.Suite(preset="heroic"), HELDOUT, grpc.StatusCode.INVALID_ARGUMENT, "unknown suite preset"),
    ("outside the roots", SMALL_SUITE, Path("/etc"), grpc.StatusCode.PERMISSION_DENIED, "outside the dataset roots"),
    ("missing dataset", SMALL_SUITE, HELDOUT / "nope", grpc.StatusCode.NOT_FOUND, "does not exist"),
    ("labels the model lacks", SMALL_SUITE, ROOT / "deploy" / "samples", grpc.StatusCode.INVALID_ARGUMENT, "not among the model's labels"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "suite", "dataset", "code", "message"), BAD, ids=[b[0] for b in BAD]
)
async def test_bad_requests_fail_the_call_not_the_job(
    app: AssayServer,
    name: str,
    suite: robustness_pb2.Suite,
    dataset: Path,
    code: grpc.StatusCode,
    message: str,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        robustness, jobs = stubs(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await robustness.StartEvaluation(start_request(suite, dataset))
        assert info.value.code() == code and message in info.value.details(), info.value.details()
        assert not (await jobs.ListJobs(jobs_pb2.ListJobsRequest())).jobs


async def test_empty_dataset_and_unknown_job(job_app: AssayServer) -> None:
    app = job_app
    empty = ROOT / "deploy" / "samples" / "digits_heldout" / "0"  # a folder without class folders
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        robustness, jobs = stubs(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await robustness.StartEvaluation(start_request(SMALL_SUITE, empty))
        assert (
            info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "no images" in info.value.details()
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.GetJob(jobs_pb2.GetJobRequest(id="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_score_robustness_inline(app: AssayServer) -> None:
    images = [common_pb2.Image(encoded=p.read_bytes()) for p in SAMPLES]
    request = robustness_pb2.ScoreRobustnessRequest(
        model=common_pb2.ModelRef(name="digits_cnn"), images=images,
        labels=[p.name[0] for p in SAMPLES], groups=["even" if int(p.name[0]) % 2 == 0 else "odd" for p in SAMPLES],
        suite=robustness_pb2.Suite(corruptions=["gaussian_noise"], severities=[3], perturbations=[]),
    )  # fmt: skip
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        robustness, _ = stubs(channel)
        report = json.loads((await robustness.ScoreRobustness(request)).json)
        assert report["dataset"]["images"] == 20 and report["clean"]["error"]["value"] == 0.0
        assert set(report["subgroups"]["accuracy"]) == {"even", "odd"}
        request.labels[0] = "seven"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await robustness.ScoreRobustness(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        del request.images[:]
        request.images.extend([common_pb2.Image(encoded=SAMPLES[0].read_bytes())] * 65)
        del request.labels[:]
        request.labels.extend(["0"] * 65)
        del request.groups[:]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await robustness.ScoreRobustness(request)
        assert "1..64 images" in info.value.details()


def test_killed_server_resumes_the_job_without_losing_units(
    tmp_path: Path, server_store: dict[str, str]
) -> None:
    """kill -9 a real server mid-job; a restarted one takes it over once its lease ran out."""
    env = {**os.environ, "ASSAY_GRPC__PORT": "0", "ASSAY_METRICS__PORT": "0",
           "ASSAY_DATA__DIR": str(tmp_path), "ASSAY_DATA__ROOTS": json.dumps([str(ROOT / "deploy" / "samples")]),
           # the killed server's lease must run out before anyone resumes its job: keep it short
           "ASSAY_JOBS__LEASE_S": "3", "ASSAY_JOBS__HEARTBEAT_S": "0.5", "ASSAY_JOBS__TAKEOVER_POLL_S": "0.5"}  # fmt: skip
    if "url" in server_store:
        env["ASSAY_DATA__URL"] = server_store["url"]

    def serve() -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen([sys.executable, "-m", "assay.client", "serve"], cwd=ROOT, env=env,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "server exited early"
            match = re.search(r"assay listening on [\d.]+:(\d+)", line)
            if match:
                return proc, int(match.group(1))
        raise AssertionError("server did not start")

    async def start_and_wait(port: int, units: int) -> tuple[str, int]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            robustness, jobs = stubs(channel)
            suite = robustness_pb2.Suite(preset="standard", sample_limit=100)
            job = await robustness.StartEvaluation(start_request(suite))
            async for event in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id)):
                if event.job.done >= units:
                    return job.id, event.job.done
        raise AssertionError("job ended early")

    async def finish(port: int, job_id: str) -> tuple[jobs_pb2.Job, jobs_pb2.Job, dict]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            _, jobs = stubs(channel)
            events = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job_id))]
            report = json.loads((await jobs.GetReport(jobs_pb2.GetReportRequest(id=job_id))).json)
            return events[0].job, events[-1].job, report

    first, port = serve()
    try:
        job_id, done_before = asyncio.run(start_and_wait(port, 5))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()  # type: ignore[union-attr]
    second, port = serve()
    try:
        resumed, job, report = asyncio.run(finish(port, job_id))
        assert resumed.done >= done_before, "units finished before the kill were kept"
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
        assert job.attempts == 2 and job.done == job.total
        assert len(report["corruptions"]) == 19
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        second.stderr.close()  # type: ignore[union-attr]


async def test_square_attack_suite_through_the_batcher(app: AssayServer) -> None:
    attack = robustness_pb2.Attack(
        kind=robustness_pb2.ATTACK_KIND_SQUARE_LINF, epsilon=0.3, queries=100
    )
    suite = robustness_pb2.Suite(preset="adversarial", attacks=[attack], sample_limit=40)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        robustness, jobs = stubs(channel)
        job = await robustness.StartEvaluation(start_request(suite))
        events = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id))]
        assert events[-1].job.state == jobs_pb2.JOB_STATE_SUCCEEDED, events[-1].job.error
        report = json.loads((await jobs.GetReport(jobs_pb2.GetReportRequest(id=job.id))).json)
    (result,) = report["attacks"]
    assert result["kind"] == "square_linf" and result["clean_accuracy"] >= 0.9
    assert result["robust_accuracy"]["value"] <= result["clean_accuracy"] - 0.5, (
        "the attack breaks most digits"
    )
    assert result["median_queries"] <= 100 and result["score_calls"] <= 101


async def test_white_box_pgd_and_fgsm_with_the_torchscript_copy() -> None:
    entry = demo_settings().models[0].model_dump(mode="json")
    entry["torchscript"] = str(
        ROOT / "deploy/triton/model_repository/digits_cnn/1/model.torchscript.pt"
    )
    settings = demo_settings(models=[entry], data={"roots": [str(ROOT / "deploy" / "samples")]})
    server = await create_server(settings)
    await server.start()
    attacks = [
        robustness_pb2.Attack(kind=robustness_pb2.ATTACK_KIND_FGSM, epsilon=0.15),
        robustness_pb2.Attack(kind=robustness_pb2.ATTACK_KIND_PGD_LINF, epsilon=0.15, steps=10),
        robustness_pb2.Attack(kind=robustness_pb2.ATTACK_KIND_PGD_L2, epsilon=2.0, steps=10),
    ]
    suite = robustness_pb2.Suite(preset="adversarial", attacks=attacks, sample_limit=40)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            robustness, jobs = stubs(channel)
            job = await robustness.StartEvaluation(start_request(suite))
            events = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id))]
            assert events[-1].job.state == jobs_pb2.JOB_STATE_SUCCEEDED, events[-1].job.error
            report = json.loads((await jobs.GetReport(jobs_pb2.GetReportRequest(id=job.id))).json)
    finally:
        await server.stop(0)
    fgsm_result, pgd_linf, pgd_l2 = report["attacks"]
    assert pgd_linf["clean_accuracy"] >= 0.9
    assert pgd_linf["robust_accuracy"]["value"] <= pgd_linf["clean_accuracy"] - 0.5
    assert pgd_linf["robust_accuracy"]["value"] <= fgsm_result["robust_accuracy"]["value"] + 1e-9
    assert pgd_l2["robust_accuracy"]["value"] < pgd_l2["clean_accuracy"]


def upload_request(
    *items: datasets_pb2.UploadDatasetRequest,
) -> list[datasets_pb2.UploadDatasetRequest]:
    return list(items)


async def test_uploaded_dataset_can_be_evaluated(job_app: AssayServer, tmp_path: Path) -> None:
    app = job_app
    local = tmp_path / "mini"
    for sample in SAMPLES[:10]:
        target = local / sample.name[0] / sample.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sample.read_bytes())
    (local / ".DS_Store").write_bytes(b"junk")  # hidden files are not uploaded
    from assay.client import (
        AsyncClient,
        FailedPreconditionError,
    )

    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        path = await client.upload_dataset("mini", local)
        assert Path(path).name == "mini" and len(list(Path(path).rglob("*.png"))) == 10
        job = await client.start_evaluation("digits_cnn", path, "quick", corruptions=["contrast"], severities=[1],
                                            perturbations=[], shift_consistency=False)  # fmt: skip
        final = [e async for e in client.watch_job(job.id)][-1].job
        assert final.state == "succeeded", final.error
        assert (await client.get_report(job.id))["dataset"]["images"] == 10
        with pytest.raises(FailedPreconditionError, match="already exists"):
            await client.upload_dataset("mini", local)
        assert await client.upload_dataset("mini", local, replace=True) == path

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = datasets_pb2_grpc.DatasetServiceStub(channel)
        header = datasets_pb2.UploadDatasetRequest(header=datasets_pb2.DatasetHeader(name="evil"))
        for bad_path in ("../escape.png", "/etc/passwd", "a/../../b.png", ".hidden/x.png"):
            chunk = datasets_pb2.UploadDatasetRequest(
                chunk=datasets_pb2.FileChunk(path=bad_path, data=b"x")
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.UploadDataset(iter([header, chunk]))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad_path
        chunk = datasets_pb2.UploadDatasetRequest(
            chunk=datasets_pb2.FileChunk(path="a.png", data=b"x")
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UploadDataset(iter([chunk]))
        assert "first message must be a DatasetHeader" in info.value.details()
    uploads = Path(app.settings.data.dir) / "datasets"
    assert sorted(p.name for p in uploads.iterdir() if not p.name.startswith(".")) == ["mini"], (
        "failed uploads leave nothing behind"
    )
    assert list((uploads / ".staging").iterdir()) == [], "nor anything staged"
    deadline = time.monotonic() + 30  # removed in the background, SETTLE_S after the switch
    while len(list((uploads / ".versions" / "mini").iterdir())) > 1:
        assert time.monotonic() < deadline, "the replaced version was not removed"
        await asyncio.sleep(0.02)


async def test_upload_over_the_limit_is_resource_exhausted(tmp_path: Path) -> None:
    server = await create_server(demo_settings(data={"max_upload_mb": 0.001}))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = datasets_pb2_grpc.DatasetServiceStub(channel)
            messages = [datasets_pb2.UploadDatasetRequest(header=datasets_pb2.DatasetHeader(name="big")),
                        datasets_pb2.UploadDatasetRequest(chunk=datasets_pb2.FileChunk(path="a.bin", data=b"x" * 5000))]  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.UploadDataset(iter(messages))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(0)


def test_cli_evaluate_uploads_and_writes_an_html_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from assay.client._background import BackgroundServer
    from assay.client.cli import app as cli_app

    local = tmp_path / "digits"
    for sample in SAMPLES:
        (local / sample.name[0]).mkdir(parents=True, exist_ok=True)
        (local / sample.name[0] / sample.name).write_bytes(sample.read_bytes())
    with BackgroundServer(demo_settings()) as server:
        out = tmp_path / "report.html"
        result = CliRunner().invoke(cli_app, [
            "evaluate", "--model", "digits_cnn", "--data", str(local), "--upload", "cli-digits",
            "--corruptions", "fog,contrast", "--severities", "1,3", "--out", str(out),
            "--target", f"127.0.0.1:{server.port}",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "clean error" in result.output and "error under fog" in result.output
    html = out.read_text()
    assert html.count("data:image/png;base64,") >= 3 and "digits_cnn" in html
