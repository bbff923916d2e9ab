"""AI-generated image detection over the real gRPC stack with the committed demo detector.

The tests that fit, list, rewrite or delete detector profiles, and the evaluation job,
run on both store engines (`job_app`); the pure inference ones on the default.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from assay.client import AsyncClient, FailedPreconditionError, GeneratedVerdict
from assay.client.aigen_report_html import render_aigen_html
from assay.server.aigen.fit_job import split
from assay.server.app import AssayServer, create_server
from assay.v1 import aigen_pb2, aigen_pb2_grpc, common_pb2, jobs_pb2, jobs_pb2_grpc
from tests.conftest import REPOSITORY, ROOT, demo_settings, png_bytes

SAMPLES = ROOT / "deploy" / "samples"
AIGEN = SAMPLES / "aigen"
DETECTOR = REPOSITORY / "aigen_demo"
MANIFEST = yaml.safe_load((DETECTOR / "assay.yaml").read_text())


def detector_entry() -> dict[str, Any]:
    return {**MANIFEST, "path": str(DETECTOR / "1" / "model.onnx")}


def sample(group: str, index: int) -> Path:
    """The index-th eval image of a group (real, gen_a, gen_b)."""
    return sorted((AIGEN / "eval" / group).glob("*.png"))[index]


def rows(manifest: str) -> list[dict[str, str]]:
    text = (AIGEN / manifest).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def serve(store: dict[str, str]) -> AssayServer:
    base = demo_settings()
    entries = [base.models[0].model_dump(mode="json"), detector_entry()]
    server = await create_server(
        demo_settings(
            models=entries,
            data={"roots": [str(SAMPLES)], **store},
            images={"max_pixels": 4_000_000},
        )
    )
    await server.start()
    return server


@pytest.fixture
async def app() -> AssayServer:  # type: ignore[misc]
    server = await serve({})
    yield server
    await server.stop(0)


@pytest.fixture
async def job_app(server_store: dict[str, str]) -> AssayServer:  # type: ignore[misc]
    """`app` once on each store engine."""
    server = await serve(server_store)
    yield server
    await server.stop(0)


async def probabilities(client: AsyncClient, paths: list[Path]) -> np.ndarray:
    results: list[GeneratedVerdict] = []
    for start in range(0, len(paths), 32):
        results += await client.detect_generated(paths[start : start + 32])
    return np.array([r.detectors[0].probability for r in results])


async def fit(client: AsyncClient, **kw: Any) -> None:
    job = await client.fit_detector("aigen_demo", str(AIGEN / "fit.jsonl"), **kw)
    async for event in client.watch_job(job.id):
        last = event
    assert last.job.state == "succeeded", last.job.error


async def test_fit_calibrates_at_target_fpr_and_holdout_metrics_match_sklearn(
    job_app: AssayServer,
) -> None:
    app = job_app
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        await fit(client, target_fpr=0.05, holdout_fraction=0.3, seed=2)
        (profile,) = await client.list_detector_profiles("aigen_demo")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = aigen_pb2_grpc.AigenServiceStub(channel)
            listed = await stub.ListDetectorProfiles(aigen_pb2.ListDetectorProfilesRequest())
        (message,) = listed.profiles
        assert 0 < time.time() - message.created_at.ToSeconds() < 600  # a Timestamp of the fit
        assert profile.created_at == pytest.approx(message.created_at.ToNanoseconds() / 1e9)
        table = rows("fit.jsonl")
        labels = np.array([r["label"] == "generated" for r in table], dtype=np.int64)
        probs = await probabilities(client, [AIGEN / r["path"] for r in table])
        held = split(labels, 0.3, seed=2)
        fit_real = probs[~held & (labels == 0)]
        assert profile.calibration_fpr == pytest.approx(np.mean(fit_real >= profile.threshold))
        assert profile.calibration_fpr <= 0.05
        assert np.mean(fit_real >= np.nextafter(profile.threshold, -1)) > 0.05, "smallest"
        y, p = labels[held], probs[held]
        assert profile.holdout_ap == pytest.approx(average_precision_score(y, p), abs=1e-9)
        assert profile.holdout_auroc == pytest.approx(roc_auc_score(y, p), abs=1e-9)
        assert profile.holdout_fpr == pytest.approx(np.mean(p[y == 0] >= profile.threshold))
        assert profile.spectral and (profile.real_images, profile.generated_images) == (60, 60)

        verdicts = await client.detect_generated(
            [sample("gen_a", 0), sample("real", 0)],
            stability=True,
            explain=True,
        )
        for v in verdicts:
            assert v.calibrated and v.detectors[0].threshold == profile.threshold
            assert not any("0.5 rule" in n for n in v.notes)
            assert v.stability is not None
            # 96x96 samples: downscale_0.5 (48x48) is below the 64-pixel crop, so left out
            names = [x.name for x in v.stability.variants]
            assert names == ["jpeg_q95", "jpeg_q85", "jpeg_q75", "downscale_0.75",
                             "gaussian_blur_s1.0"]  # fmt: skip
            assert any("without downscale_0.5" in n for n in v.notes)
            flips = sum(x.flipped for x in v.stability.variants) / 5
            assert v.stability.flip_fraction == pytest.approx(flips)
            expected = (
                "unsure"
                if flips > 0
                else ("generated" if v.probability >= profile.threshold else "real")
            )
            assert v.verdict == expected
            assert v.spectral is not None and len(v.spectral.spectrum) == 32
            crops = v.detectors[0].crops
            assert len(crops) == 4 and {(c.top, c.left) for c in crops} == {
                (0, 0), (0, 32), (32, 0), (32, 32)}  # fmt: skip
            top3 = sorted((c.probability for c in crops), reverse=True)[:3]
            assert v.probability == pytest.approx(np.mean(top3))


async def test_without_a_profile_the_raw_rule_decides_and_says_so(app: AssayServer) -> None:
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        (v,) = await client.detect_generated([sample("gen_a", 1)])
    assert not v.calibrated and v.detectors[0].threshold == 0.5
    assert v.verdict == ("generated" if v.probability >= 0.5 else "real")
    assert any("raw 0.5 rule" in note for note in v.notes)
    assert v.stability is None and v.spectral is None


def checkerboard(image: np.ndarray, amplitude: float) -> np.ndarray:
    """A faint period-2 grid, like transposed-convolution up-sampling leaves."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    grid = np.where((yy + xx) % 2 == 0, amplitude, -amplitude)[:, :, None]
    return np.clip(image.astype(np.float64) + grid, 0, 255).round().astype(np.uint8)


async def test_a_jpeg_resave_that_flips_the_verdict_gives_unsure(app: AssayServer) -> None:
    """A real photo with a faint up-sampling grid: flagged, until a JPEG re-save erases it."""
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        await fit(client)
        found = None
        for path in sorted((AIGEN / "eval" / "real").glob("*.png")):
            real = np.asarray(Image.open(path).convert("RGB"))
            (plain,) = await client.detect_generated([real])
            if plain.detectors[0].generated:
                continue  # already a false positive: no flip to construct
            for amplitude in range(1, 17):
                (v,) = await client.detect_generated(
                    [checkerboard(real, amplitude)], stability=True
                )
                assert v.stability is not None
                jpeg = [x.name for x in v.stability.variants if x.flipped and "jpeg" in x.name]
                if v.detectors[0].generated and jpeg:
                    found = (real, amplitude, v)
                    break
            if found:
                break
        assert found is not None, "no real photo + grid is flagged and then flipped by JPEG"
        real, amplitude, v = found
        assert v.verdict == "unsure" and v.stability is not None
        assert v.stability.flip_fraction == pytest.approx(
            sum(x.flipped for x in v.stability.variants) / len(v.stability.variants)
        )
        # the same image, tolerating every flip, keeps its base decision
        (lenient,) = await client.detect_generated(
            [checkerboard(real, amplitude)], stability=True, max_flip_fraction=1.0
        )
        assert lenient.verdict == "generated"


async def test_evaluate_reports_per_generator_metrics_matching_sklearn(
    job_app: AssayServer,
) -> None:
    app = job_app
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        await fit(client)
        job = await client.evaluate_aigen_detector(
            "aigen_demo", str(AIGEN / "eval.jsonl"), jpeg_qualities=[90, 60], resize_scales=[0.5]
        )
        async for event in client.watch_job(job.id):
            last = event
        assert last.job.state == "succeeded", last.job.error
        report = await client.get_report(job.id)
        table = rows("eval.jsonl")
        probs = await probabilities(client, [AIGEN / r["path"] for r in table])
    labels = np.array([r["label"] == "generated" for r in table], dtype=np.int64)
    groups = np.array([r["group"] for r in table])
    assert report["schema"] == "assay.aigen.evaluation/v1"
    assert report["calibration"]["source"] == "profile"
    assert report["counts"] == {"real": 60, "generated": 120}
    overall = report["overall"]
    assert overall["ap"]["value"] == pytest.approx(average_precision_score(labels, probs))
    assert overall["auroc"]["value"] == pytest.approx(roc_auc_score(labels, probs))
    t = report["calibration"]["threshold"]
    assert overall["real_accuracy_calibrated"]["value"] == pytest.approx(
        np.mean(probs[labels == 0] < t)
    )
    by_name = {g["name"]: g for g in report["generators"]}
    assert set(by_name) == {"gen_a", "gen_b"}
    for name, g in by_name.items():
        keep = (groups == "real") | (groups == name)
        assert g["ap"]["value"] == pytest.approx(average_precision_score(labels[keep], probs[keep]))
        assert g["accuracy_calibrated"]["value"] == pytest.approx(
            np.mean(probs[groups == name] >= t)
        )
        assert g["ap"]["low"] <= g["ap"]["value"] <= g["ap"]["high"]
    assert [p["param"] for p in report["robustness"]["jpeg"]] == [90, 60]
    assert [p["param"] for p in report["robustness"]["resize"]] == [0.5]
    assert set(report["spectra"]["by_group"]) == {"real", "gen_a", "gen_b"}
    html = render_aigen_html(report)
    assert "gen_b" in html and html.count("<img") >= 4


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), colour).convert("P") for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


async def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(
    app: AssayServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = aigen_pb2_grpc.AigenServiceStub(channel)

        async def detect(data: bytes, detector: str = "") -> aigen_pb2.DetectGeneratedResponse:
            refs = [common_pb2.ModelRef(name=detector)] if detector else []
            request = aigen_pb2.DetectGeneratedRequest(
                images=[common_pb2.Image(encoded=data)], detectors=refs
            )
            return await stub.DetectGenerated(request)

        cases = [
            (b"not an image at all", grpc.StatusCode.INVALID_ARGUMENT, "not a supported image"),
            (_gif(), grpc.StatusCode.INVALID_ARGUMENT, "animated GIF with 2 frames"),
            (png_bytes(np.zeros((2100, 2100), np.uint8)), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        ]
        for data, code, words in cases:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await detect(data)
            assert failure.value.code() == code, failure.value.details()
            assert words in (failure.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await detect(png_bytes(np.zeros((8, 8), np.uint8)), "digits_cnn")
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not an aigen_detector" in (failure.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await detect(png_bytes(np.zeros((8, 8), np.uint8)), "nope")
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.DetectGenerated(aigen_pb2.DetectGeneratedRequest())
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # handled: 1x1, 16-bit PNG, CMYK JPEG
        wide = (np.arange(4096, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
        rgb = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
        for data in (
            png_bytes(np.full((1, 1, 3), 128, np.uint8)),
            _encoded(Image.fromarray(wide), "PNG"),
            _encoded(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        ):
            (result,) = (await detect(data)).results
            assert 0.0 <= result.probability <= 1.0
        (tiny,) = (await detect(png_bytes(np.full((1, 1, 3), 9, np.uint8)))).results
        assert any("reflection-padded" in n for n in tiny.notes)


async def test_predict_aigen_signal_and_prometheus_metrics(app: AssayServer) -> None:
    paths = [sample("gen_a", 2), sample("real", 2)]
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        predictions = await client.predict("digits_cnn", paths, signals=["aigen"])
        direct = await client.detect_generated(paths)
    for prediction, verdict in zip(predictions, direct, strict=True):
        assert prediction.label is not None and prediction.aigen is not None
        assert prediction.aigen.probability == pytest.approx(verdict.probability)
        assert prediction.aigen.detectors[0].detector == "aigen_demo"
    url = f"http://127.0.0.1:{app.metrics_port}/metrics"
    text = await asyncio.to_thread(scrape, url)
    count = re.search(r'^assay_aigen_score_count\{detector="aigen_demo"\} (\S+)$', text, re.M)
    assert count and float(count.group(1)) == 4.0
    verdicts = re.findall(
        r'^assay_aigen_verdict_total\{detector="aigen_demo",verdict="(\w+)"\} (\S+)$', text, re.M
    )
    assert sum(float(v) for _, v in verdicts) == 4.0


async def refused_within(client: AsyncClient, seconds: float) -> str:
    """Details of the FAILED_PRECONDITION detection gets once the server sees a stored change."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await client.detect_generated([sample("real", 0)])
        except FailedPreconditionError as exc:
            return exc.details
        assert time.monotonic() < deadline, f"the change was not seen within {seconds} s"
        await asyncio.sleep(0.05)


async def test_refit_weights_mismatch_and_delete(job_app: AssayServer, tmp_path: Path) -> None:
    app = job_app
    store = app.jobs.store  # the server's store; another replica would write the same row
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        await fit(client)
        (v,) = await client.detect_generated([sample("real", 0)])
        assert v.calibrated  # the profile is cached now
        stored = store.get_profile("aigen", "aigen_demo", "1")
        assert stored is not None and stored.blob is not None  # spectrum arrays in the same row
        document = json.loads(json.dumps(stored.document))
        document["detector"]["fingerprint"] = "sha256:other-weights"
        store.put_profile("aigen", "aigen_demo", "1", document, stored.blob)
        assert "fingerprint mismatch" in await refused_within(client, 10.0)
        deleted = await client.delete_detector_profile("aigen_demo")
        assert deleted.version == "1" and await client.list_detector_profiles() == []
        (v,) = await client.detect_generated([sample("real", 0)])
        assert not v.calibrated


async def test_an_unreadable_profile_is_listed_refused_and_deletable(job_app: AssayServer) -> None:
    app = job_app
    store = app.jobs.store
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        (v,) = await client.detect_generated([sample("real", 0)])
        assert not v.calibrated  # no profile: cached as missing
        # a row written by a newer server: this one cannot read it
        store.put_profile("aigen", "aigen_demo", "1", {"schema": "assay.aigen.profile/v9"}, None)
        details = await refused_within(client, 10.0)
        assert "detector profile of detector 'aigen_demo' version '1' is unreadable" in details
        assert "DeleteDetectorProfile" in details and "FitDetector" in details
        (listed,) = await client.list_detector_profiles()
        assert (listed.detector, listed.version) == ("aigen_demo", "1")
        assert listed.problem.startswith("unreadable: expected schema")
        deleted = await client.delete_detector_profile("aigen_demo", "1")
        assert deleted.problem == listed.problem
        assert await client.list_detector_profiles() == []
        (v,) = await client.detect_generated([sample("real", 0)])
        assert not v.calibrated


async def test_fit_refuses_wrong_labels_and_non_detectors(app: AssayServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = aigen_pb2_grpc.AigenServiceStub(channel)
        for detector, dataset, words in (
            ("aigen_demo", SAMPLES / "digits_heldout", "labels must be 'real' and 'generated'"),
            ("digits_cnn", AIGEN / "fit.jsonl", "not an aigen_detector"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.FitDetector(
                    aigen_pb2.FitDetectorRequest(
                        detector=common_pb2.ModelRef(name=detector), dataset=str(dataset)
                    )
                )
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in (failure.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.FitDetector(
                aigen_pb2.FitDetectorRequest(
                    detector=common_pb2.ModelRef(name="aigen_demo"),
                    dataset=str(AIGEN / "fit.jsonl"),
                    target_fpr=0.7,
                )
            )
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "target_fpr: Input should be less than 0.5 (got 0.7)" in (
            failure.value.details() or ""
        )
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        assert not (await jobs.ListJobs(jobs_pb2.ListJobsRequest())).jobs


def test_cli_fit_detect_and_evaluate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from assay.client._background import BackgroundServer
    from assay.client.cli import app as cli_app

    base = demo_settings()
    settings = demo_settings(
        models=[base.models[0].model_dump(mode="json"), detector_entry()],
        data={"roots": [str(SAMPLES)]},
    )
    runner = CliRunner(env={"COLUMNS": "200"})  # tables unwrapped for the asserts
    with BackgroundServer(settings) as server:
        target = ["--target", f"127.0.0.1:{server.port}"]
        fitted = runner.invoke(
            cli_app, ["aigen", "fit", "-D", "aigen_demo", "-d", str(AIGEN / "fit.jsonl"), *target]
        )
        assert fitted.exit_code == 0, fitted.output
        assert "aigen_demo" in fitted.output
        images = [str(sample("gen_b", 5)), str(sample("real", 5))]
        detected = runner.invoke(
            cli_app, ["aigen", "detect", "--stability", "--json", *images, *target]
        )
        assert detected.exit_code == 0, detected.output
        parsed = json.loads(detected.output)
        assert [r["verdict"] in ("generated", "real", "unsure") for r in parsed] == [True, True]
        assert all(r["detectors"][0]["calibrated"] for r in parsed)
        out = tmp_path / "aigen.html"
        evaluated = runner.invoke(
            cli_app,
            ["aigen", "evaluate", "-D", "aigen_demo", "-d", str(AIGEN / "eval.jsonl"),
             "--out", str(out), *target],
        )  # fmt: skip
        assert evaluated.exit_code == 0, evaluated.output
        assert "generator gen_b" in evaluated.output and out.stat().st_size > 10_000
        html = out.read_text()
        assert "gen_a" in html and "gen_b" in html
        missing = runner.invoke(cli_app, ["aigen", "detect", "-D", "nope", images[0], *target])
        assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
