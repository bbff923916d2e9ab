"""OOD profiles over the real gRPC stack with the real demo model and shipped OOD sets.

The tests that fit, list, read, import or delete profiles run on both store
engines (`job_app`, `server_store`); the pure inference ones on the default.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from assay.client import AsyncClient
from assay.server.app import AssayServer, create_server
from assay.server.profiles.legacy import write_files
from assay.server.store import default_url, open_store
from assay.server.store.codec import unpack_arrays
from assay.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    ood_pb2,
    ood_pb2_grpc,
)
from tests.conftest import ROOT, demo_settings

SAMPLES_ROOT = ROOT / "deploy" / "samples"
HELDOUT = SAMPLES_ROOT / "digits_heldout"
OOD_SETS = {
    name: sorted((SAMPLES_ROOT / "ood" / name / "ood").glob("*.png"))[:60]
    for name in ("letters", "textures", "noise")
}
DIGITS = ROOT / "deploy" / "triton" / "model_repository" / "digits_cnn"


@pytest.fixture
async def app() -> AssayServer:  # type: ignore[misc]
    server = await create_server(demo_settings(data={"roots": [str(SAMPLES_ROOT)]}))
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
async def job_app(server_store: dict[str, str]) -> AssayServer:  # type: ignore[misc]
    """`app` once on each store engine."""
    server = await create_server(demo_settings(data={"roots": [str(SAMPLES_ROOT)], **server_store}))
    await server.start()
    yield server
    await server.stop(0)


def ref(name: str = "digits_cnn", version: str = "") -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=name, version=version)


async def fit(channel: grpc.aio.Channel, dataset: Path = HELDOUT, **fields: object) -> jobs_pb2.Job:
    ood = ood_pb2_grpc.OodServiceStub(channel)
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    job = await ood.FitProfile(
        ood_pb2.FitProfileRequest(model=ref(), dataset=str(dataset), **fields)
    )
    events = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id))]
    return events[-1].job


def images(paths: list[Path]) -> list[common_pb2.Image]:
    return [common_pb2.Image(encoded=p.read_bytes(), id=p.name) for p in paths]


async def test_fit_then_score_separates_ood_sets_from_held_out_digits(job_app: AssayServer) -> None:
    app = job_app
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        job = await fit(channel, sample_limit=300)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
        ood = ood_pb2_grpc.OodServiceStub(channel)
        before = time.time()
        listed = (await ood.ListProfiles(ood_pb2.ListProfilesRequest(model="digits_cnn"))).profiles
        fitted_at = listed[0].created_at.ToSeconds()
        assert before - 600 < fitted_at <= before  # set at the fit (a Timestamp, no longer empty)
        async with AsyncClient(f"127.0.0.1:{app.port}") as client:
            (info,) = await client.list_profiles("digits_cnn")
        assert info.created_at == pytest.approx(listed[0].created_at.ToNanoseconds() / 1e9)
        assert len(listed) == 1 and {s.scorer for s in listed[0].scorers} == {
            "msp", "max_logit", "energy", "entropy", "mahalanobis", "gaussian", "knn", "vim"}  # fmt: skip
        scorers = [s.scorer for s in listed[0].scorers]
        digits = sorted(HELDOUT.glob("*/*.png"))[::3][:100]

        async def scores(paths: list[Path]) -> dict[str, np.ndarray]:
            response = await ood.ScoreOOD(
                ood_pb2.ScoreOODRequest(model=ref(), images=images(paths), scorers=scorers)
            )
            return {
                s: np.array(
                    [next(x.score for x in r.scores if x.scorer == s) for r in response.results]
                )
                for s in scorers
            }

        in_scores = await scores(digits)
        aurocs = {}
        for name, paths in OOD_SETS.items():
            out_scores = await scores(paths)
            for scorer in scorers:
                labels = np.r_[np.zeros(len(digits)), np.ones(len(paths))]
                aurocs[(name, scorer)] = roc_auc_score(
                    labels, np.r_[in_scores[scorer], out_scores[scorer]]
                )
        best = {name: max(aurocs[(name, s)] for s in scorers) for name in OOD_SETS}
        print(
            "AUROC by OOD set and scorer:",
            json.dumps({f"{k[0]}/{k[1]}": round(v, 3) for k, v in aurocs.items()}),
        )
        assert all(value > 0.9 for value in best.values()), best


async def test_predict_ood_signal_uses_the_same_inference(app: AssayServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        assert (await fit(channel, sample_limit=200)).state == jobs_pb2.JOB_STATE_SUCCEEDED
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        batch = images(sorted(HELDOUT.glob("*/*.png"))[:8] + OOD_SETS["noise"][:8])
        registry = app.metrics.registry
        calls = lambda: registry.get_sample_value("assay_batch_size_count", {"model": "digits_cnn"})  # noqa: E731
        before = calls()
        plain = await stub.Predict(inference_pb2.PredictRequest(model=ref(), images=batch))
        middle = calls()
        signalled = await stub.Predict(
            inference_pb2.PredictRequest(model=ref(), images=batch, signals=["ood"])
        )
        after = calls()
        assert after - middle == middle - before == 1, "the OOD signal adds no backend call"
        assert [r.top_k[0].label for r in plain.results] == [
            r.top_k[0].label for r in signalled.results
        ]
        flags = [r.ood[0].is_ood for r in signalled.results]
        assert sum(flags[8:]) >= 6 and sum(flags[:8]) <= 2, flags
        assert all(
            r.ood[0].scorer == "mahalanobis" and 0 <= r.ood[0].holdout_tail <= 1
            for r in signalled.results
        )
        flagged = registry.get_sample_value(
            "assay_ood_flagged_total", {"model": "digits_cnn", "scorer": "mahalanobis"}
        )
        assert flagged == sum(flags)


async def test_bad_requests(app: AssayServer, tmp_path: Path) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        ood = ood_pb2_grpc.OodServiceStub(channel)
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        one = images(OOD_SETS["noise"][:1])
        cases = [
            (stub.Predict(inference_pb2.PredictRequest(model=ref(), images=one, signals=["ood"])), grpc.StatusCode.FAILED_PRECONDITION, "no OOD profile"),
            (stub.Predict(inference_pb2.PredictRequest(model=ref(), images=one, signals=["vibes"])), grpc.StatusCode.INVALID_ARGUMENT, "unknown signals"),
            (ood.ScoreOOD(ood_pb2.ScoreOODRequest(model=ref(), images=one)), grpc.StatusCode.FAILED_PRECONDITION, "FitProfile"),
            (ood.FitProfile(ood_pb2.FitProfileRequest(model=ref(), dataset=str(HELDOUT), scorers=["magic"])), grpc.StatusCode.INVALID_ARGUMENT, "unknown scorer"),
            (ood.FitProfile(ood_pb2.FitProfileRequest(model=ref(), dataset=str(HELDOUT / "0"))), grpc.StatusCode.INVALID_ARGUMENT, "no images"),
            (ood.FitProfile(ood_pb2.FitProfileRequest(model=ref(), dataset="/etc")), grpc.StatusCode.PERMISSION_DENIED, "outside"),
            (ood.DeleteProfile(ood_pb2.DeleteProfileRequest(model=ref())), grpc.StatusCode.NOT_FOUND, "no OOD profile"),
            (ood.FitProfile(ood_pb2.FitProfileRequest(model=ref(), dataset=str(HELDOUT), target_tpr=1.5)), grpc.StatusCode.INVALID_ARGUMENT, "target_tpr: Input should be less than 1 (got 1.5)"),
            (ood.FitProfile(ood_pb2.FitProfileRequest(model=ref(), dataset=str(HELDOUT), holdout_fraction=0.9)), grpc.StatusCode.INVALID_ARGUMENT, "holdout_fraction: Input should be less than or equal to 0.5"),
            (ood.ListProfiles(ood_pb2.ListProfilesRequest(model="../../etc")), grpc.StatusCode.INVALID_ARGUMENT, "model name '../../etc' is not valid"),
            (ood.DeleteProfile(ood_pb2.DeleteProfileRequest(model=ref(version="../1"))), grpc.StatusCode.INVALID_ARGUMENT, "model version '../1' is not valid"),
        ]  # fmt: skip
        for call, code, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == code and message in info.value.details(), (
                info.value.details()
            )


async def test_scorer_needing_features_on_a_logits_only_model_and_tiny_reference(
    tmp_path: Path,
) -> None:
    entry = demo_settings().models[0].model_dump(mode="json")
    entry["outputs"] = {"logits": "logits"}
    tiny = tmp_path / "tiny" / "3"
    tiny.mkdir(parents=True)
    (tiny / "a.png").write_bytes(sorted(HELDOUT.glob("3/*.png"))[0].read_bytes())
    server = await create_server(
        demo_settings(models=[entry], data={"roots": [str(SAMPLES_ROOT), str(tmp_path)]})
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            ood = ood_pb2_grpc.OodServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ood.FitProfile(
                    ood_pb2.FitProfileRequest(model=ref(), dataset=str(HELDOUT), scorers=["knn"])
                )
            assert (
                info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                and "features" in info.value.details()
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ood.FitProfile(
                    ood_pb2.FitProfileRequest(model=ref(), dataset=str(tmp_path / "tiny"))
                )
            assert (
                info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                and "at least 3" in info.value.details()
            )
            job = await fit(channel, sample_limit=100)
            assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
            listed = (await ood.ListProfiles(ood_pb2.ListProfilesRequest())).profiles
            assert {s.scorer for s in listed[0].scorers} == {
                "msp",
                "max_logit",
                "energy",
                "entropy",
            }
    finally:
        await server.stop(0)


async def test_profile_of_another_version_is_refused(
    tmp_path: Path, server_store: dict[str, str]
) -> None:
    data = {"roots": [str(SAMPLES_ROOT)], "dir": str(tmp_path), **server_store}
    first = await create_server(demo_settings(data=data))
    await first.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            assert (await fit(channel, sample_limit=100)).state == jobs_pb2.JOB_STATE_SUCCEEDED
    finally:
        await first.stop(0)
    entry = demo_settings().models[0].model_dump(mode="json")
    entry["version"] = "2"
    second = await create_server(demo_settings(models=[entry], data=data))
    await second.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            ood = ood_pb2_grpc.OodServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ood.ScoreOOD(
                    ood_pb2.ScoreOODRequest(model=ref(), images=images(OOD_SETS["noise"][:1]))
                )
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "profiles exist for versions 1" in info.value.details()
    finally:
        await second.stop(0)


async def test_an_older_servers_profile_files_are_imported_at_start(
    tmp_path: Path, server_store: dict[str, str]
) -> None:
    first_dir, old_dir = tmp_path / "first", tmp_path / "old"
    first = await create_server(
        demo_settings(data={"roots": [str(SAMPLES_ROOT)], "dir": str(first_dir)})
    )
    await first.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            assert (await fit(channel, sample_limit=100)).state == jobs_pb2.JOB_STATE_SUCCEEDED
        row = first.jobs.store.get_profile("ood", "digits_cnn", "1")
    finally:
        await first.stop(0)
    assert row is not None and row.blob is not None
    # what a server before the store left in its data folder: profile.{json,npz}
    folder = old_dir / "profiles" / "digits_cnn" / "1"
    folder.mkdir(parents=True)
    write_files(folder / "profile", row.document, unpack_arrays(row.blob))
    second = await create_server(  # on a store of its own: the import fills it
        demo_settings(data={"roots": [str(SAMPLES_ROOT)], "dir": str(old_dir), **server_store})
    )
    await second.start()
    try:
        assert not (old_dir / "profiles").exists()
        assert (old_dir / "profiles.imported" / "digits_cnn" / "1" / "profile.json").exists()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            ood = ood_pb2_grpc.OodServiceStub(channel)
            (listed,) = (await ood.ListProfiles(ood_pb2.ListProfilesRequest())).profiles
            assert listed.model.name == "digits_cnn" and not listed.problem
            scored = await ood.ScoreOOD(
                ood_pb2.ScoreOODRequest(model=ref(), images=images(OOD_SETS["noise"][:2]))
            )
            assert len(scored.results) == 2
    finally:
        await second.stop(0)


async def test_two_replicas_on_one_postgresql_share_profiles(postgres_url: str) -> None:
    """Fitted through A, Predict on B uses it within the refresh interval; deleted on A, B stops."""
    data = {"roots": [str(SAMPLES_ROOT)], "url": postgres_url, "profile_refresh_s": 0.5}
    a = await create_server(demo_settings(data=data))  # each gets its own data folder
    b = await create_server(demo_settings(data=data))
    await a.start()
    await b.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as on_a,
            grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as on_b,
        ):
            predict = inference_pb2_grpc.InferenceServiceStub(on_b).Predict
            request = inference_pb2.PredictRequest(
                model=ref(), images=images(OOD_SETS["noise"][:1]), signals=["ood"]
            )
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await predict(request)  # B caches that there is no profile
            assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert (await fit(on_a, sample_limit=100)).state == jobs_pb2.JOB_STATE_SUCCEEDED
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    response = await predict(request)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                    assert time.monotonic() < deadline, "B never saw the profile fitted on A"
                    await asyncio.sleep(0.05)
            assert response.results[0].ood  # scored with the profile fitted through A
            await ood_pb2_grpc.OodServiceStub(on_a).DeleteProfile(
                ood_pb2.DeleteProfileRequest(model=ref())
            )
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    await predict(request)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                    break
                assert time.monotonic() < deadline, "B still uses the profile deleted on A"
                await asyncio.sleep(0.05)
    finally:
        await b.stop(0)
        await a.stop(0)


def test_cli_lists_an_unreadable_profile_with_its_problem_and_deletes_it(
    tmp_path: Path, server_store: dict[str, str]
) -> None:
    from typer.testing import CliRunner

    from assay.client._background import BackgroundServer
    from assay.client.cli import app as cli_app

    runner = CliRunner()
    data = {"roots": [str(SAMPLES_ROOT)], "dir": str(tmp_path), **server_store}
    with BackgroundServer(demo_settings(data=data)) as server:
        target = ["--target", f"127.0.0.1:{server.port}"]
        url = server_store.get("url") or default_url(tmp_path)
        replica = open_store(url)  # another replica on the same database
        try:  # a profile written by a newer server
            replica.put_profile("ood", "digits_cnn", "1", {"schema": "assay.ood.profile/v9"}, None)
        finally:
            replica.close()
        listed = runner.invoke(cli_app, ["ood", "profiles", *target])
        assert listed.exit_code == 0, listed.output
        flat = " ".join(listed.output.split())
        assert "digits_cnn" in flat and "unreadable: profile schema" in flat
        assert "assay ood delete-profile digits_cnn --version 1" in flat
        as_json = runner.invoke(cli_app, ["ood", "profiles", "--json", *target])
        (entry,) = json.loads(as_json.output)
        assert entry["problem"].startswith("unreadable: profile schema 'assay.ood.profile/v9'")
        digit = str(sorted(HELDOUT.glob("*/*.png"))[0])
        predicted = runner.invoke(
            cli_app, ["predict", "--model", "digits_cnn", "--signals", "ood", digit, *target]
        )
        assert predicted.exit_code != 0
        refused = " ".join(predicted.output.split())
        assert "FAILED_PRECONDITION" in refused and "is unreadable" in refused
        assert "DeleteProfile" in refused
        deleted = runner.invoke(cli_app, ["ood", "delete-profile", "digits_cnn", *target])
        assert deleted.exit_code == 0, deleted.output
        assert "deleted the OOD profile of digits_cnn v1 (unreadable:" in deleted.output
        again = runner.invoke(cli_app, ["ood", "profiles", "--json", *target])
        assert json.loads(again.output) == []


def test_cli_fit_then_predict_with_the_ood_signal(server_store: dict[str, str]) -> None:
    """The "done when" loop: fit a profile, then `assay predict --signals ood` flags noise, passes digits."""
    from typer.testing import CliRunner

    from assay.client._background import BackgroundServer
    from assay.client.cli import app as cli_app

    runner = CliRunner()
    data = {"roots": [str(SAMPLES_ROOT)], **server_store}
    with BackgroundServer(demo_settings(data=data)) as server:
        target = ["--target", f"127.0.0.1:{server.port}"]
        fitted = runner.invoke(
            cli_app,
            [
                "ood",
                "fit",
                "--model",
                "digits_cnn",
                "--data",
                str(HELDOUT),
                "--sample-limit",
                "300",
                *target,
            ],
        )
        assert fitted.exit_code == 0, fitted.output
        assert "mahalanobis (default)" in fitted.output
        digits = [str(p) for p in sorted(HELDOUT.glob("*/*.png"))[:6]]
        noise = [str(p) for p in OOD_SETS["noise"][:6]]
        predicted = runner.invoke(
            cli_app,
            [
                "predict",
                "--model",
                "digits_cnn",
                "--signals",
                "ood",
                "--json",
                *digits,
                *noise,
                *target,
            ],
        )
        assert predicted.exit_code == 0, predicted.output
        rows = json.loads(predicted.output)
        flags = [row["ood"][0]["is_ood"] for row in rows]
        assert sum(flags[6:]) >= 5 and sum(flags[:6]) <= 1, flags
        scored = runner.invoke(
            cli_app,
            ["ood", "score", "--model", "digits_cnn", "--scorers", "energy,knn", noise[0], *target],
        )
        assert scored.exit_code == 0 and "energy" in scored.output and "knn" in scored.output
        listed = runner.invoke(cli_app, ["ood", "profiles", *target])
        assert "digits_cnn" in listed.output


async def test_evaluate_detectors_ranks_scorers_on_the_callers_data(app: AssayServer) -> None:
    from assay.client import AsyncClient

    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        job = await client.fit_profile("digits_cnn", str(HELDOUT), sample_limit=250, seed=1)
        assert [e async for e in client.watch_job(job.id)][-1].job.state == "succeeded"
        ood_sets = [str(SAMPLES_ROOT / "ood" / name) for name in ("letters", "noise")]
        job = await client.evaluate_ood_scorers(
            "digits_cnn", str(HELDOUT), ood_sets, sample_limit=80, seed=2
        )
        final = [e async for e in client.watch_job(job.id)][-1].job
        assert final.state == "succeeded", final.error
        report = await client.get_report(job.id)
    assert report["schema"] == "assay.ood.evaluation/v1" and set(report["ood_datasets"]) == {
        "letters",
        "noise",
    }
    ranking = [row["scorer"] for row in report["ranking"]]
    assert set(ranking) == set(report["results"]) and report["recommended"] == ranking[0]
    means = [row["mean_auroc"] for row in report["ranking"]]
    assert means == sorted(means, reverse=True) and means[0] > 0.95
    energy = report["results"]["energy"]["noise"]
    assert energy["auroc"]["low"] <= energy["auroc"]["value"] <= energy["auroc"]["high"]
    assert energy["roc"]["fpr"][0] == 0.0 and energy["roc"]["tpr"][-1] == 1.0
    assert sum(energy["histogram"]["in"]) == report["in_dataset"]["images"] == 80


TILES = SAMPLES_ROOT / "ood" / "anomaly" / "tiles"


async def test_patchcore_anomaly_maps_localise_synthetic_defects(job_app: AssayServer) -> None:
    """Also the largest profile blob (PatchCore's memory bank) through each engine."""
    from PIL import Image

    app = job_app

    from assay.v1.tensor_codec import to_array

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        job = await fit(channel, dataset=TILES / "train", scorers=["patchcore", "energy"])
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
        ood = ood_pb2_grpc.OodServiceStub(channel)
        good = sorted((TILES / "test" / "good").glob("*.png"))
        defects = sorted((TILES / "test" / "defect").glob("*.png"))
        request = ood_pb2.DetectAnomalyRequest(
            model=ref(),
            images=images(good + defects),
            map_format=ood_pb2.ANOMALY_MAP_FORMAT_FLOAT16,
        )
        response = await ood.DetectAnomaly(request)
        png = await ood.DetectAnomaly(ood_pb2.DetectAnomalyRequest(
            model=ref(), images=images(defects[:1]), map_format=ood_pb2.ANOMALY_MAP_FORMAT_PNG))  # fmt: skip
        for no_map in (ood_pb2.ANOMALY_MAP_FORMAT_NONE, ood_pb2.ANOMALY_MAP_FORMAT_UNSPECIFIED):
            plain = await ood.DetectAnomaly(ood_pb2.DetectAnomalyRequest(
                model=ref(), images=images(defects[:1]), map_format=no_map))  # fmt: skip
            (only,) = plain.results  # the default (UNSPECIFIED) is NONE: scores, no map
            assert not only.HasField("map") and not only.map_png
            assert only.score == pytest.approx(png.results[0].score)
    scores = np.array([r.score for r in response.results])
    labels = np.r_[np.zeros(len(good)), np.ones(len(defects))]
    image_auroc = roc_auc_score(labels, scores)
    maps = np.stack([to_array(r.map).astype(np.float32) for r in response.results[len(good) :]])
    masks = []
    for path in defects:
        with Image.open(TILES / "ground_truth" / "defect" / f"{path.stem}_mask.png") as mask:
            small = mask.convert("L").resize(maps.shape[2:0:-1], Image.Resampling.NEAREST)
        masks.append(np.asarray(small) > 127)
    pixel_auroc = roc_auc_score(np.stack(masks).ravel(), maps.ravel())
    print(
        f"PatchCore on digits_cnn features: image AUROC {image_auroc:.3f}, pixel AUROC {pixel_auroc:.3f}"
    )
    assert maps.shape[1:] == (28, 28)
    assert image_auroc > 0.6 and pixel_auroc > 0.6
    with Image.open(__import__("io").BytesIO(png.results[0].map_png)) as decoded:
        assert decoded.size == (28, 28) and decoded.mode == "L"


def test_cli_anomaly_fit_and_detect_with_overlays(tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from assay.client._background import BackgroundServer
    from assay.client.cli import app as cli_app

    runner = CliRunner()
    with BackgroundServer(demo_settings(data={"roots": [str(SAMPLES_ROOT)]})) as server:
        target = ["--target", f"127.0.0.1:{server.port}"]
        fitted = runner.invoke(
            cli_app,
            ["anomaly", "fit", "--model", "digits_cnn", "--data", str(TILES / "train"), *target],
        )
        assert fitted.exit_code == 0, fitted.output
        defects = [str(p) for p in sorted((TILES / "test" / "defect").glob("*.png"))[:3]]
        detected = runner.invoke(
            cli_app,
            [
                "anomaly",
                "detect",
                "--model",
                "digits_cnn",
                "--out-dir",
                str(tmp_path),
                *defects,
                *target,
            ],
        )
        assert detected.exit_code == 0, detected.output
    overlays = sorted(tmp_path.glob("*_anomaly.png"))
    assert len(overlays) == 3
    with Image.open(overlays[0]) as first, Image.open(defects[0]) as source:
        assert first.size == source.size and first.mode == "RGB"


def test_cli_ood_evaluate_writes_the_ranked_table_and_an_html_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from assay.client._background import BackgroundServer
    from assay.client.cli import app as cli_app

    runner = CliRunner()
    with BackgroundServer(demo_settings(data={"roots": [str(SAMPLES_ROOT)]})) as server:
        target = ["--target", f"127.0.0.1:{server.port}"]
        fitted = runner.invoke(
            cli_app,
            [
                "ood",
                "fit",
                "--model",
                "digits_cnn",
                "--data",
                str(HELDOUT),
                "--sample-limit",
                "200",
                *target,
            ],
        )
        assert fitted.exit_code == 0, fitted.output
        out = tmp_path / "ood.html"
        evaluated = runner.invoke(cli_app, [
            "ood", "evaluate", "--model", "digits_cnn", "--id", str(HELDOUT), "--ood", str(SAMPLES_ROOT / "ood" / "textures"),
            "--ood", str(SAMPLES_ROOT / "ood" / "noise"), "--sample-limit", "60", "--out", str(out), *target,
        ])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "(recommended)" in evaluated.output and "AUROC textures" in evaluated.output
    html = out.read_text()
    assert html.count("data:image/png;base64,") >= 4 and "digits_cnn" in html


async def test_predict_ood_and_anomaly_signals_together(app: AssayServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        job = await fit(channel, dataset=TILES / "train", scorers=["mahalanobis", "patchcore"])
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        batch = images(sorted((TILES / "test" / "defect").glob("*.png"))[:4])
        registry = app.metrics.registry
        before = registry.get_sample_value("assay_batch_size_count", {"model": "digits_cnn"})
        response = await stub.Predict(
            inference_pb2.PredictRequest(model=ref(), images=batch, signals=["ood", "anomaly"])
        )
        after = registry.get_sample_value("assay_batch_size_count", {"model": "digits_cnn"})
    assert after - before == 1
    assert all(
        r.ood[0].scorer == "mahalanobis" and r.anomaly[0].scorer == "patchcore"
        for r in response.results
    )
    flagged = registry.get_sample_value("assay_anomaly_flagged_total", {"model": "digits_cnn"}) or 0
    assert flagged == sum(r.anomaly[0].is_ood for r in response.results)


async def test_evaluate_anomaly_reports_image_pixel_aupro_and_aupimo(app: AssayServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        assert (
            await fit(channel, dataset=TILES / "train", scorers=["patchcore"])
        ).state == jobs_pb2.JOB_STATE_SUCCEEDED
        ood = ood_pb2_grpc.OodServiceStub(channel)
        jobs = jobs_pb2_grpc.JobServiceStub(channel)
        job = await ood.EvaluateAnomaly(
            ood_pb2.EvaluateAnomalyRequest(model=ref(), dataset=str(TILES))
        )
        events = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id))]
        assert events[-1].job.state == jobs_pb2.JOB_STATE_SUCCEEDED, events[-1].job.error
        report = json.loads((await jobs.GetReport(jobs_pb2.GetReportRequest(id=job.id))).json)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ood.EvaluateAnomaly(
                ood_pb2.EvaluateAnomalyRequest(model=ref(), dataset=str(TILES / "train"))
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    print("anomaly evaluation:", {k: report[k] for k in ("image_auroc", "pixel_auroc", "aupro")})
    assert report["schema"] == "assay.anomaly.evaluation/v1" and report["dataset"]["good"] == 20
    assert (
        0.5 < report["image_auroc"] <= 1
        and 0.5 < report["pixel_auroc"] <= 1
        and 0 <= report["aupro"] <= 1
    )
    assert len(report["aupimo"]) == 40 and all(0 <= v <= 1 for v in report["aupimo"].values())
