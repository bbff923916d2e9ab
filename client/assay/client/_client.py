"""Client and AsyncClient: typed calls with deadlines and UNAVAILABLE retries.

Retries use gRPC's own retry policy (service config), so they are
transparent, bounded and backed off; other failures raise the typed
exceptions in `_errors`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assay.client._aigen import (
    DetectorProfileInfo,
    GeneratedVerdict,
    detect_request,
    detector_profile,
    evaluate_request,
    fit_request,
    generated_verdict,
)
from assay.client._convert import (
    ImageLike,
    anomaly_result,
    image_message,
    model_info,
    ood_profile,
    ood_score,
    predict_request,
    predictions,
)
from assay.client._errors import from_rpc_error
from assay.client._jobs import Job, JobProgress, job, list_request, progress, suite_message
from assay.client._types import AnomalyResult, ModelInfo, OodProfileInfo, OodScore, Prediction
from assay.v1 import (
    aigen_pb2,
    aigen_pb2_grpc,
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    inference_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    ood_pb2,
    ood_pb2_grpc,
    robustness_pb2,
    robustness_pb2_grpc,
)

DEFAULT_TARGET = "127.0.0.1:50051"


def channel_options(max_message_mb: float, retries: int) -> list[tuple[str, Any]]:
    """Message-size, keepalive and retry settings for the channel."""
    max_bytes = int(max_message_mb * 1024 * 1024)
    service_config = {
        "methodConfig": [
            {
                "name": [
                    {"service": "assay.v1.InferenceService"},
                    {"service": "assay.v1.ModelService"},
                ],
                "retryPolicy": {
                    "maxAttempts": max(2, min(retries + 1, 5)),
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.enable_retries", 1 if retries > 0 else 0),
    ]
    if retries > 0:
        options.append(("grpc.service_config", json.dumps(service_config)))
    return options


def _start_request(
    model: str,
    dataset: str,
    preset: str,
    version: str,
    baseline: str | None,
    suite: dict[str, Any],
) -> robustness_pb2.StartEvaluationRequest:
    return robustness_pb2.StartEvaluationRequest(
        model=common_pb2.ModelRef(name=model, version=version),
        dataset=dataset,
        suite=suite_message(preset, suite),
        baseline=common_pb2.ModelRef(name=baseline or ""),
    )


def _score_request(
    model: str,
    images: Iterable[ImageLike],
    labels: Sequence[str],
    groups: Sequence[str] | None,
    preset: str,
    suite: dict[str, Any],
) -> robustness_pb2.ScoreRobustnessRequest:
    return robustness_pb2.ScoreRobustnessRequest(
        model=common_pb2.ModelRef(name=model),
        images=[image_message(i) for i in images],
        labels=list(labels),
        groups=list(groups or ()),
        suite=suite_message(preset, suite),
    )


UPLOAD_CHUNK = 1 << 20


def upload_messages(
    name: str, folder: Path, replace: bool
) -> Iterator[datasets_pb2.UploadDatasetRequest]:
    """Header, then every non-hidden file under folder in 1 MiB chunks."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    yield datasets_pb2.UploadDatasetRequest(
        header=datasets_pb2.DatasetHeader(name=name, replace=replace)
    )
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        with path.open("rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK):
                yield datasets_pb2.UploadDatasetRequest(
                    chunk=datasets_pb2.FileChunk(path=relative.as_posix(), data=chunk)
                )


def _fit_request(
    model: str,
    dataset: str,
    scorers: Iterable[str],
    target_tpr: float,
    holdout_fraction: float,
    sample_limit: int | None,
    seed: int,
) -> ood_pb2.FitProfileRequest:
    request = ood_pb2.FitProfileRequest(
        model=common_pb2.ModelRef(name=model),
        dataset=dataset,
        scorers=list(scorers),
        target_tpr=target_tpr,
        holdout_fraction=holdout_fraction,
        seed=seed,
    )
    if sample_limit is not None:
        request.sample_limit = sample_limit
    return request


def _health_request(service: str) -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


def _serving(response: health_pb2.HealthCheckResponse) -> bool:
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


class Client:
    """Blocking client. Use as a context manager or call close().

    Args:
        target: host:port of the assay server.
        timeout_s: deadline of every call unless a call passes its own.
        retries: extra attempts on UNAVAILABLE (0 disables retrying; at most 4).
        max_message_mb: largest message sent or received.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        max_message_mb: float = 64.0,
    ) -> None:
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            target, options=channel_options(max_message_mb, retries)
        )
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._inference = inference_pb2_grpc.InferenceServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._robustness = robustness_pb2_grpc.RobustnessServiceStub(self._channel)
        self._datasets = datasets_pb2_grpc.DatasetServiceStub(self._channel)
        self._ood = ood_pb2_grpc.OodServiceStub(self._channel)
        self._aigen = aigen_pb2_grpc.AigenServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def _list(
        self, method: Any, request: Any, field: str, timeout_s: float | None, limit: int = 0
    ) -> list[Any]:
        """Every item of a List RPC (at most ``limit`` when > 0), page after page."""
        items: list[Any] = []
        while True:
            response = self._call(method, request, timeout_s)
            items.extend(getattr(response, field))
            if not response.next_page_token or 0 < limit <= len(items):
                return items[:limit] if limit else items
            request.page_token = response.next_page_token

    def list_models(self, *, timeout_s: float | None = None) -> list[ModelInfo]:
        """Every model the server serves."""
        request = models_pb2.ListModelsRequest()
        found = self._list(self._models.ListModels, request, "models", timeout_s)
        return [model_info(m) for m in found]

    def get_model(
        self, name: str, version: str = "", *, timeout_s: float | None = None
    ) -> ModelInfo:
        """One model's description."""
        request = models_pb2.GetModelRequest(model=common_pb2.ModelRef(name=name, version=version))
        return model_info(self._call(self._models.GetModel, request, timeout_s))

    def predict(
        self,
        model: str,
        images: Iterable[ImageLike],
        *,
        top_k: int = 0,
        outputs: Iterable[str] = (),
        version: str = "",
        ids: Iterable[str] | None = None,
        signals: Iterable[str] = (),
        timeout_s: float | None = None,
    ) -> list[Prediction]:
        """Predict images (paths, bytes, arrays or PIL images) with one model.

        `signals=["ood"]` adds the model's OOD verdicts from the same inference.
        """
        request = predict_request(
            model, images, version=version, top_k=top_k, outputs=outputs, ids=ids, signals=signals
        )
        return predictions(self._call(self._inference.Predict, request, timeout_s))

    def is_serving(self, service: str = "", *, timeout_s: float | None = None) -> bool:
        """Standard gRPC health check ("" = the whole server)."""
        return _serving(self._call(self._health.Check, _health_request(service), timeout_s))

    def upload_dataset(
        self, name: str, folder: str | os.PathLike[str], *, replace: bool = False
    ) -> str:
        """Upload a local dataset folder (ImageFolder, or manifest + images); return its path."""
        try:
            response = self._datasets.UploadDataset(upload_messages(name, Path(folder), replace))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return str(response.path)

    def start_evaluation(
        self,
        model: str,
        dataset: str,
        preset: str = "quick",
        *,
        version: str = "",
        baseline: str | None = None,
        **suite: Any,
    ) -> Job:
        """Start a robustness suite on a dataset under the server's roots; returns at once.

        `suite` overrides preset fields: corruptions, severities, perturbations,
        attacks ([{"kind": "square_linf", "epsilon": 0.03, "queries": 500}]),
        sample_limit, seed, shift_consistency, calibration, subgroups, perturbation_frames.
        """
        request = _start_request(model, dataset, preset, version, baseline, suite)
        return job(self._call(self._robustness.StartEvaluation, request, None))

    def fit_profile(
        self,
        model: str,
        dataset: str,
        *,
        scorers: Iterable[str] = (),
        target_tpr: float = 0.95,
        holdout_fraction: float = 0.2,
        sample_limit: int | None = None,
        seed: int = 0,
    ) -> Job:
        """Start fitting the model's OOD profile on in-distribution images (a job)."""
        request = _fit_request(
            model, dataset, scorers, target_tpr, holdout_fraction, sample_limit, seed
        )
        return job(self._call(self._ood.FitProfile, request, None))

    def evaluate_ood_scorers(
        self,
        model: str,
        in_dataset: str,
        ood_datasets: Iterable[str],
        *,
        scorers: Iterable[str] = (),
        sample_limit: int | None = None,
        seed: int = 0,
    ) -> Job:
        """Start comparing the profile's scorers on in-distribution vs OOD sets (a job)."""
        request = ood_pb2.EvaluateOodScorersRequest(
            model=common_pb2.ModelRef(name=model),
            in_dataset=in_dataset,
            ood_datasets=list(ood_datasets),
            scorers=list(scorers),
            seed=seed,
        )
        if sample_limit is not None:
            request.sample_limit = sample_limit
        return job(self._call(self._ood.EvaluateOodScorers, request, None))

    def detect_anomaly(
        self,
        model: str,
        images: Iterable[ImageLike],
        *,
        with_maps: bool = False,
        timeout_s: float | None = None,
    ) -> list[AnomalyResult]:
        """PatchCore scores (and float maps) for images; the profile must include "patchcore"."""
        request = ood_pb2.DetectAnomalyRequest(
            model=common_pb2.ModelRef(name=model),
            images=[image_message(i) for i in images],
            map_format=ood_pb2.ANOMALY_MAP_FORMAT_FLOAT16
            if with_maps
            else ood_pb2.ANOMALY_MAP_FORMAT_NONE,
        )
        response = self._call(self._ood.DetectAnomaly, request, timeout_s)
        return [anomaly_result(r) for r in response.results]

    def list_profiles(self, model: str = "") -> list[OodProfileInfo]:
        """Stored OOD profiles."""
        request = ood_pb2.ListProfilesRequest(model=model)
        found = self._list(self._ood.ListProfiles, request, "profiles", None)
        return [ood_profile(p) for p in found]

    def score_ood(
        self,
        model: str,
        images: Iterable[ImageLike],
        *,
        scorers: Iterable[str] = (),
        timeout_s: float | None = None,
    ) -> list[list[OodScore]]:
        """Per image, the verdict of each scorer (the profile's default when none named)."""
        request = ood_pb2.ScoreOODRequest(
            model=common_pb2.ModelRef(name=model),
            images=[image_message(i) for i in images],
            scorers=list(scorers),
        )
        response = self._call(self._ood.ScoreOOD, request, timeout_s)
        return [[ood_score(s) for s in r.scores] for r in response.results]

    def detect_generated(
        self,
        images: Iterable[ImageLike],
        *,
        detectors: Iterable[str] = (),
        stability: bool = False,
        max_flip_fraction: float | None = None,
        explain: bool = False,
        ids: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[GeneratedVerdict]:
        """Is each image AI-generated? Detectors are "name" or "name:version" (none = defaults).

        `stability` re-scores JPEG re-saves, down-scales and a blur and answers
        "unsure" when the decision flips; `explain` adds per-crop scores and
        spectral evidence.
        """
        request = detect_request(
            images,
            detectors=detectors,
            stability=stability,
            max_flip_fraction=max_flip_fraction,
            explain=explain,
            ids=ids,
        )
        response = self._call(self._aigen.DetectGenerated, request, timeout_s)
        return [generated_verdict(r) for r in response.results]

    def fit_detector(
        self,
        detector: str,
        dataset: str,
        *,
        target_fpr: float = 0.05,
        holdout_fraction: float = 0.3,
        sample_limit: int | None = None,
        seed: int = 0,
    ) -> Job:
        """Start calibrating a detector on a labelled real/generated set (a job)."""
        request = fit_request(
            detector,
            dataset,
            target_fpr=target_fpr,
            holdout_fraction=holdout_fraction,
            sample_limit=sample_limit,
            seed=seed,
        )
        return job(self._call(self._aigen.FitDetector, request, None))

    def evaluate_aigen_detector(
        self,
        detector: str,
        dataset: str,
        *,
        jpeg_qualities: Iterable[int] = (),
        resize_scales: Iterable[float] = (),
        sample_limit: int | None = None,
        seed: int = 0,
    ) -> Job:
        """Start evaluating a detector per generator and under re-encoding (a job)."""
        request = evaluate_request(
            detector,
            dataset,
            jpeg_qualities=jpeg_qualities,
            resize_scales=resize_scales,
            sample_limit=sample_limit,
            seed=seed,
        )
        return job(self._call(self._aigen.EvaluateAigenDetector, request, None))

    def list_detector_profiles(self, detector: str = "") -> list[DetectorProfileInfo]:
        """Stored detector profiles."""
        request = aigen_pb2.ListDetectorProfilesRequest(detector=detector)
        found = self._list(self._aigen.ListDetectorProfiles, request, "profiles", None)
        return [detector_profile(p) for p in found]

    def delete_detector_profile(self, detector: str, version: str = "") -> DetectorProfileInfo:
        """Delete a detector's profile (its verdicts fall back to the 0.5 rule)."""
        request = aigen_pb2.DeleteDetectorProfileRequest(
            detector=common_pb2.ModelRef(name=detector, version=version)
        )
        return detector_profile(self._call(self._aigen.DeleteDetectorProfile, request, None))

    def watch_job(self, job_id: str) -> Iterator[JobProgress]:
        """Progress events until the job ends (no deadline: suites can run long)."""
        try:
            for event in self._jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job_id)):
                yield progress(event)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def get_job(self, job_id: str, *, timeout_s: float | None = None) -> Job:
        """One job."""
        return job(self._call(self._jobs.GetJob, jobs_pb2.GetJobRequest(id=job_id), timeout_s))

    def list_jobs(
        self, *, kind: str = "", states: Iterable[str] = (), limit: int = 100
    ) -> list[Job]:
        """Jobs, newest first (at most ``limit``; 0 = every job)."""
        request = list_request(kind, states, limit)
        return [job(j) for j in self._list(self._jobs.ListJobs, request, "jobs", None, limit)]

    def cancel_job(self, job_id: str, *, timeout_s: float | None = None) -> Job:
        """Cancel a live job (finished units are kept)."""
        request = jobs_pb2.CancelJobRequest(id=job_id)
        return job(self._call(self._jobs.CancelJob, request, timeout_s))

    def get_report(self, job_id: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        """The report document of a succeeded job."""
        request = jobs_pb2.GetReportRequest(id=job_id)
        return dict(json.loads(self._call(self._jobs.GetReport, request, timeout_s).json))

    def score_robustness(
        self,
        model: str,
        images: Iterable[ImageLike],
        labels: Sequence[str],
        *,
        groups: Sequence[str] | None = None,
        preset: str = "quick",
        timeout_s: float | None = None,
        **suite: Any,
    ) -> dict[str, Any]:
        """A suite on a small inline batch (at most 64 images); returns the report."""
        request = _score_request(model, images, labels, groups, preset, suite)
        response = self._call(self._robustness.ScoreRobustness, request, timeout_s)
        return dict(json.loads(response.json))


class AsyncClient:
    """asyncio client with the same methods as Client, as coroutines."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        max_message_mb: float = 64.0,
    ) -> None:
        self.timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(
            target, options=channel_options(max_message_mb, retries)
        )
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._inference = inference_pb2_grpc.InferenceServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._robustness = robustness_pb2_grpc.RobustnessServiceStub(self._channel)
        self._datasets = datasets_pb2_grpc.DatasetServiceStub(self._channel)
        self._ood = ood_pb2_grpc.OodServiceStub(self._channel)
        self._aigen = aigen_pb2_grpc.AigenServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return await method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    async def _list(
        self, method: Any, request: Any, field: str, timeout_s: float | None, limit: int = 0
    ) -> list[Any]:
        """Every item of a List RPC (at most ``limit`` when > 0), page after page."""
        items: list[Any] = []
        while True:
            response = await self._call(method, request, timeout_s)
            items.extend(getattr(response, field))
            if not response.next_page_token or 0 < limit <= len(items):
                return items[:limit] if limit else items
            request.page_token = response.next_page_token

    async def list_models(self, *, timeout_s: float | None = None) -> list[ModelInfo]:
        """Every model the server serves."""
        request = models_pb2.ListModelsRequest()
        found = await self._list(self._models.ListModels, request, "models", timeout_s)
        return [model_info(m) for m in found]

    async def get_model(
        self, name: str, version: str = "", *, timeout_s: float | None = None
    ) -> ModelInfo:
        """One model's description."""
        request = models_pb2.GetModelRequest(model=common_pb2.ModelRef(name=name, version=version))
        return model_info(await self._call(self._models.GetModel, request, timeout_s))

    async def predict(
        self,
        model: str,
        images: Iterable[ImageLike],
        *,
        top_k: int = 0,
        outputs: Iterable[str] = (),
        version: str = "",
        ids: Iterable[str] | None = None,
        signals: Iterable[str] = (),
        timeout_s: float | None = None,
    ) -> list[Prediction]:
        """Predict images (paths, bytes, arrays or PIL images) with one model.

        `signals=["ood"]` adds the model's OOD verdicts from the same inference.
        """
        request = predict_request(
            model, images, version=version, top_k=top_k, outputs=outputs, ids=ids, signals=signals
        )
        return predictions(await self._call(self._inference.Predict, request, timeout_s))

    async def is_serving(self, service: str = "", *, timeout_s: float | None = None) -> bool:
        """Standard gRPC health check ("" = the whole server)."""
        request = _health_request(service)
        return _serving(await self._call(self._health.Check, request, timeout_s))

    async def upload_dataset(
        self, name: str, folder: str | os.PathLike[str], *, replace: bool = False
    ) -> str:
        """Upload a local dataset folder; return its server path."""
        try:
            call = self._datasets.UploadDataset(upload_messages(name, Path(folder), replace))
            response = await call
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return str(response.path)

    async def start_evaluation(
        self,
        model: str,
        dataset: str,
        preset: str = "quick",
        *,
        version: str = "",
        baseline: str | None = None,
        **suite: Any,
    ) -> Job:
        """Start a robustness suite; see Client.start_evaluation."""
        request = _start_request(model, dataset, preset, version, baseline, suite)
        return job(await self._call(self._robustness.StartEvaluation, request, None))

    async def watch_job(self, job_id: str) -> AsyncIterator[JobProgress]:
        """Progress events until the job ends."""
        try:
            async for event in self._jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job_id)):
                yield progress(event)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    async def get_job(self, job_id: str, *, timeout_s: float | None = None) -> Job:
        """One job."""
        request = jobs_pb2.GetJobRequest(id=job_id)
        return job(await self._call(self._jobs.GetJob, request, timeout_s))

    async def list_jobs(
        self, *, kind: str = "", states: Iterable[str] = (), limit: int = 100
    ) -> list[Job]:
        """Jobs, newest first (at most ``limit``; 0 = every job)."""
        request = list_request(kind, states, limit)
        found = await self._list(self._jobs.ListJobs, request, "jobs", None, limit)
        return [job(j) for j in found]

    async def cancel_job(self, job_id: str, *, timeout_s: float | None = None) -> Job:
        """Cancel a live job."""
        request = jobs_pb2.CancelJobRequest(id=job_id)
        return job(await self._call(self._jobs.CancelJob, request, timeout_s))

    async def get_report(self, job_id: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        """The report document of a succeeded job."""
        request = jobs_pb2.GetReportRequest(id=job_id)
        response = await self._call(self._jobs.GetReport, request, timeout_s)
        return dict(json.loads(response.json))

    async def score_robustness(
        self,
        model: str,
        images: Iterable[ImageLike],
        labels: Sequence[str],
        *,
        groups: Sequence[str] | None = None,
        preset: str = "quick",
        timeout_s: float | None = None,
        **suite: Any,
    ) -> dict[str, Any]:
        """A suite on a small inline batch; returns the report."""
        request = _score_request(model, images, labels, groups, preset, suite)
        response = await self._call(self._robustness.ScoreRobustness, request, timeout_s)
        return dict(json.loads(response.json))

    async def fit_profile(
        self,
        model: str,
        dataset: str,
        *,
        scorers: Iterable[str] = (),
        target_tpr: float = 0.95,
        holdout_fraction: float = 0.2,
        sample_limit: int | None = None,
        seed: int = 0,
    ) -> Job:
        """Start fitting the model's OOD profile (a job); see Client.fit_profile."""
        request = _fit_request(
            model, dataset, scorers, target_tpr, holdout_fraction, sample_limit, seed
        )
        return job(await self._call(self._ood.FitProfile, request, None))

    async def evaluate_ood_scorers(
        self,
        model: str,
        in_dataset: str,
        ood_datasets: Iterable[str],
        *,
        scorers: Iterable[str] = (),
        sample_limit: int | None = None,
        seed: int = 0,
    ) -> Job:
        """Start comparing the profile's scorers (a job); see Client.evaluate_ood_scorers."""
        request = ood_pb2.EvaluateOodScorersRequest(
            model=common_pb2.ModelRef(name=model),
            in_dataset=in_dataset,
            ood_datasets=list(ood_datasets),
            scorers=list(scorers),
            seed=seed,
        )
        if sample_limit is not None:
            request.sample_limit = sample_limit
        return job(await self._call(self._ood.EvaluateOodScorers, request, None))

    async def list_profiles(self, model: str = "") -> list[OodProfileInfo]:
        """Stored OOD profiles."""
        request = ood_pb2.ListProfilesRequest(model=model)
        found = await self._list(self._ood.ListProfiles, request, "profiles", None)
        return [ood_profile(p) for p in found]

    async def score_ood(
        self,
        model: str,
        images: Iterable[ImageLike],
        *,
        scorers: Iterable[str] = (),
        timeout_s: float | None = None,
    ) -> list[list[OodScore]]:
        """Per image, the verdict of each scorer."""
        request = ood_pb2.ScoreOODRequest(
            model=common_pb2.ModelRef(name=model),
            images=[image_message(i) for i in images],
            scorers=list(scorers),
        )
        response = await self._call(self._ood.ScoreOOD, request, timeout_s)
        return [[ood_score(s) for s in r.scores] for r in response.results]

    async def detect_generated(
        self,
        images: Iterable[ImageLike],
        *,
        detectors: Iterable[str] = (),
        stability: bool = False,
        max_flip_fraction: float | None = None,
        explain: bool = False,
        ids: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[GeneratedVerdict]:
        """Is each image AI-generated? Detectors are "name" or "name:version" (none = defaults).

        `stability` re-scores JPEG re-saves, down-scales and a blur and answers
        "unsure" when the decision flips; `explain` adds per-crop scores and
        spectral evidence.
        """
        request = detect_request(
            images,
            detectors=detectors,
            stability=stability,
            max_flip_fraction=max_flip_fraction,
            explain=explain,
            ids=ids,
        )
        response = await self._call(self._aigen.DetectGenerated, request, timeout_s)
        return [generated_verdict(r) for r in response.results]

    async def fit_detector(
        self,
        detector: str,
        dataset: str,
        *,
        target_fpr: float = 0.05,
        holdout_fraction: float = 0.3,
        sample_limit: int | None = None,
        seed: int = 0,
    ) -> Job:
        """Start calibrating a detector on a labelled real/generated set (a job)."""
        request = fit_request(
            detector,
            dataset,
            target_fpr=target_fpr,
            holdout_fraction=holdout_fraction,
            sample_limit=sample_limit,
            seed=seed,
        )
        return job(await self._call(self._aigen.FitDetector, request, None))

    async def evaluate_aigen_detector(
        self,
        detector: str,
        dataset: str,
        *,
        jpeg_qualities: Iterable[int] = (),
        resize_scales: Iterable[float] = (),
        sample_limit: int | None = None,
        seed: int = 0,
    ) -> Job:
        """Start evaluating a detector per generator and under re-encoding (a job)."""
        request = evaluate_request(
            detector,
            dataset,
            jpeg_qualities=jpeg_qualities,
            resize_scales=resize_scales,
            sample_limit=sample_limit,
            seed=seed,
        )
        return job(await self._call(self._aigen.EvaluateAigenDetector, request, None))

    async def list_detector_profiles(self, detector: str = "") -> list[DetectorProfileInfo]:
        """Stored detector profiles."""
        request = aigen_pb2.ListDetectorProfilesRequest(detector=detector)
        found = await self._list(self._aigen.ListDetectorProfiles, request, "profiles", None)
        return [detector_profile(p) for p in found]

    async def delete_detector_profile(
        self, detector: str, version: str = ""
    ) -> DetectorProfileInfo:
        """Delete a detector's profile (its verdicts fall back to the 0.5 rule)."""
        request = aigen_pb2.DeleteDetectorProfileRequest(
            detector=common_pb2.ModelRef(name=detector, version=version)
        )
        return detector_profile(await self._call(self._aigen.DeleteDetectorProfile, request, None))
