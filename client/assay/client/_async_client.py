"""`AsyncClient`: the asyncio SDK. Requests and parsers are in `_calls`; this module only sends.

It mirrors `Client` method for method (a test checks the signatures), each
method a coroutine; jobs come back as `AsyncJob` handles, so `await job.wait()`
follows one to its end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, TypeVar

import grpc

from assay.client import _calls as calls
from assay.client._aigen import DetectorProfileInfo, GeneratedVerdict
from assay.client._channel import DEFAULT_TARGET, channel_options
from assay.client._convert import ImageLike
from assay.client._errors import DeadlineExceededError, UnavailableError, from_rpc_error
from assay.client._jobs import AsyncJob, JobInfo, JobProgress
from assay.client._report import Report
from assay.client._types import (
    AnomalyResult,
    DatasetInfo,
    ModelInfo,
    OodProfileInfo,
    OodScore,
    Prediction,
)
from assay.client._waiting import JobWait

T = TypeVar("T")


class AsyncClient:
    """asyncio client with the same methods as `Client`, as coroutines. Use `async with`.

    Numbers left None take the server's defaults; 0 does too (see `Client`).

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
        options = channel_options(max_message_mb, retries)
        self._channel = grpc.aio.insecure_channel(target, options=options)
        self._stubs = calls.Stubs(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    # ------------------------------------------------------------------ sending

    async def _send(self, call: calls.Call[T]) -> T:
        method = self._stubs.method(call.method)
        try:
            response = await method(call.request, timeout=call.deadline(self.timeout_s))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return call.parse(response)

    async def _stream(self, call: calls.Call[T]) -> AsyncIterator[T]:
        method = self._stubs.method(call.method)
        replies = method(call.request, timeout=call.deadline(self.timeout_s))
        try:
            async for reply in replies:
                yield call.parse(reply)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            replies.cancel()  # a no-op once the stream ended; stops it when the caller leaves

    async def _pages(self, pages: calls.Pages[T]) -> list[T]:
        items: list[T] = []
        while pages.collect(await self._send(pages.call), items):
            continue
        return pages.result(items)

    def _job(self, info: JobInfo) -> AsyncJob:
        return AsyncJob.of(info, self._wait)

    async def _wait(self, job_id: str, timeout_s: float | None) -> AsyncJob:
        waiting = JobWait(job_id, timeout_s)
        while True:  # watch again while the server is away (see `_waiting`)
            try:
                async for event in self._stream(waiting.watch()):
                    waiting.seen(event)
                return self._job(waiting.result())
            except UnavailableError as exc:
                await asyncio.sleep(waiting.pause(exc))
            except DeadlineExceededError as exc:
                raise waiting.timed_out() from exc

    # ------------------------------------------------------------------ models and inference

    async def list_models(self, *, timeout_s: float | None = None) -> list[ModelInfo]:
        """Every model the server serves."""
        return await self._pages(calls.list_models(timeout_s))

    async def get_model(
        self, name: str, version: str = "", *, timeout_s: float | None = None
    ) -> ModelInfo:
        """One model's description."""
        return await self._send(calls.get_model(name, version, timeout_s))

    async def predict(
        self,
        model: str,
        images: Iterable[ImageLike],
        *,
        top_k: int | None = None,
        outputs: Iterable[str] = (),
        version: str = "",
        ids: Iterable[str] | None = None,
        signals: Iterable[str] = (),
        timeout_s: float | None = None,
    ) -> list[Prediction]:
        """Predict images (paths, bytes, arrays or PIL images) with one model.

        `signals=["ood"]` adds the model's OOD verdicts from the same inference,
        "anomaly" its PatchCore verdicts, "aigen" the AI-generated-image verdict.
        `top_k` classes come back per image (None or 0: the server's default).
        """
        call = calls.predict(model, images, top_k, outputs, version, ids, signals, timeout_s)
        return await self._send(call)

    async def is_serving(self, service: str = "", *, timeout_s: float | None = None) -> bool:
        """Standard gRPC health check ("" = the whole server)."""
        return await self._send(calls.is_serving(service, timeout_s))

    async def upload_dataset(
        self, name: str, folder: str | os.PathLike[str], *, replace: bool = False
    ) -> str:
        """Upload a local dataset folder (ImageFolder, or manifest + images); return its path."""
        return await self._send(calls.upload_dataset(name, folder, replace))

    async def list_datasets(self) -> list[DatasetInfo]:
        """Uploaded datasets, by name."""
        return await self._pages(calls.list_datasets())

    async def delete_dataset(self, name: str) -> DatasetInfo:
        """Delete an uploaded dataset (refused while a pending or running job uses it)."""
        return await self._send(calls.delete_dataset(name))

    # ------------------------------------------------------------------ robustness

    async def start_evaluation(
        self,
        model: str,
        dataset: str,
        preset: str | None = None,
        *,
        version: str = "",
        baseline: str | None = None,
        **suite: Any,
    ) -> AsyncJob:
        """Start a robustness suite on a dataset under the server's roots; returns at once.

        `preset` is "quick", "standard" or "adversarial" (None: the server's default);
        `suite` overrides preset fields: corruptions, severities, perturbations,
        attacks ([{"kind": "square_linf", "epsilon": 0.03, "queries": 500}]),
        sample_limit, seed, shift_consistency, calibration, subgroups, perturbation_frames.
        """
        call = calls.start_evaluation(model, dataset, preset, version, baseline, suite)
        return self._job(await self._send(call))

    async def score_robustness(
        self,
        model: str,
        images: Iterable[ImageLike],
        labels: Sequence[str],
        *,
        groups: Sequence[str] | None = None,
        preset: str | None = None,
        timeout_s: float | None = None,
        **suite: Any,
    ) -> Report:
        """A suite on a small inline batch (at most 64 images); returns the report.

        `preset` and `suite` as in `start_evaluation`.
        """
        call = calls.score_robustness(model, images, labels, groups, preset, timeout_s, suite)
        return await self._send(call)

    # ------------------------------------------------------------------ OOD and anomalies

    async def fit_profile(
        self,
        model: str,
        dataset: str,
        *,
        scorers: Iterable[str] = (),
        target_tpr: float | None = None,
        holdout_fraction: float | None = None,
        sample_limit: int | None = None,
        seed: int | None = None,
    ) -> AsyncJob:
        """Start fitting the model's OOD profile on in-distribution images (a job).

        `target_tpr` is the share of in-distribution holdout images each threshold
        keeps and `holdout_fraction` the share of images held out to set them.
        Leave a number None for the server's default (see `Client` on zeros).
        """
        args = (model, dataset, scorers, target_tpr, holdout_fraction, sample_limit, seed)
        return self._job(await self._send(calls.fit_profile(*args)))

    async def evaluate_ood_scorers(
        self,
        model: str,
        in_dataset: str,
        ood_datasets: Iterable[str],
        *,
        scorers: Iterable[str] = (),
        sample_limit: int | None = None,
        seed: int | None = None,
    ) -> AsyncJob:
        """Start comparing the profile's scorers on in-distribution vs OOD sets (a job).

        `sample_limit` applies per set (None: every image); `seed` None: the server's.
        """
        args = (model, in_dataset, ood_datasets, scorers, sample_limit, seed)
        return self._job(await self._send(calls.evaluate_ood_scorers(*args)))

    async def list_profiles(self, model: str = "") -> list[OodProfileInfo]:
        """Stored OOD profiles (all, or one model's)."""
        return await self._pages(calls.list_profiles(model))

    async def delete_profile(self, model: str, version: str = "") -> OodProfileInfo:
        """Delete a model's OOD profile ("" = the served version's); returns what was deleted."""
        return await self._send(calls.delete_profile(model, version))

    async def score_ood(
        self,
        model: str,
        images: Iterable[ImageLike],
        *,
        scorers: Iterable[str] = (),
        timeout_s: float | None = None,
    ) -> list[list[OodScore]]:
        """Per image, the verdict of each scorer (the profile's default when none named)."""
        return await self._send(calls.score_ood(model, images, scorers, timeout_s))

    async def detect_anomaly(
        self,
        model: str,
        images: Iterable[ImageLike],
        *,
        with_maps: bool = False,
        timeout_s: float | None = None,
    ) -> list[AnomalyResult]:
        """PatchCore scores (and float maps) for images; the profile must include "patchcore"."""
        return await self._send(calls.detect_anomaly(model, images, with_maps, timeout_s))

    async def evaluate_anomaly(self, model: str, dataset: str) -> AsyncJob:
        """Start evaluating the PatchCore memory on an MVTec-style test folder (a job).

        The report (schema "assay.anomaly.evaluation/v1") has image AUROC and,
        with ground-truth masks, pixel AUROC, AUPRO and per-image AUPIMO.
        """
        return self._job(await self._send(calls.evaluate_anomaly(model, dataset)))

    # ------------------------------------------------------------------ AI-generated images

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
        args = (images, detectors, stability, max_flip_fraction, explain, ids, timeout_s)
        return await self._send(calls.detect_generated(*args))

    async def fit_detector(
        self,
        detector: str,
        dataset: str,
        *,
        target_fpr: float | None = None,
        holdout_fraction: float | None = None,
        sample_limit: int | None = None,
        seed: int | None = None,
    ) -> AsyncJob:
        """Start calibrating a detector on a labelled real/generated set (a job).

        `target_fpr` is the share of real images the threshold may flag and
        `holdout_fraction` the share held out to report its rates. Leave a number
        None for the server's default (see `Client` on zeros).
        """
        args = (detector, dataset, target_fpr, holdout_fraction, sample_limit, seed)
        return self._job(await self._send(calls.fit_detector(*args)))

    async def evaluate_aigen_detector(
        self,
        detector: str,
        dataset: str,
        *,
        jpeg_qualities: Iterable[int] = (),
        resize_scales: Iterable[float] = (),
        sample_limit: int | None = None,
        seed: int | None = None,
    ) -> AsyncJob:
        """Start evaluating a detector per generator and under re-encoding (a job).

        Empty curves, and None for `sample_limit` and `seed`, take the server's defaults.
        """
        args = (detector, dataset, jpeg_qualities, resize_scales, sample_limit, seed)
        return self._job(await self._send(calls.evaluate_aigen_detector(*args)))

    async def list_detector_profiles(self, detector: str = "") -> list[DetectorProfileInfo]:
        """Stored detector profiles."""
        return await self._pages(calls.list_detector_profiles(detector))

    async def delete_detector_profile(
        self, detector: str, version: str = ""
    ) -> DetectorProfileInfo:
        """Delete a detector's profile (its verdicts fall back to the 0.5 rule)."""
        return await self._send(calls.delete_detector_profile(detector, version))

    # ------------------------------------------------------------------ jobs

    def watch_job(self, job_id: str) -> AsyncIterator[JobProgress]:
        """Progress events until the job ends (no deadline: suites can run long)."""
        return self._stream(calls.watch_job(job_id))

    async def get_job(self, job_id: str, *, timeout_s: float | None = None) -> AsyncJob:
        """One job."""
        return self._job(await self._send(calls.get_job(job_id, timeout_s)))

    async def list_jobs(
        self, *, kind: str = "", states: Iterable[str] = (), limit: int = 100
    ) -> list[AsyncJob]:
        """Jobs, newest first (at most ``limit``; 0 = every job)."""
        return [self._job(j) for j in await self._pages(calls.list_jobs(kind, states, limit))]

    async def cancel_job(self, job_id: str, *, timeout_s: float | None = None) -> AsyncJob:
        """Cancel a live job (finished units are kept)."""
        return self._job(await self._send(calls.cancel_job(job_id, timeout_s)))

    async def delete_job(self, job_id: str, *, timeout_s: float | None = None) -> JobInfo:
        """Delete an ended job with its report; returns it as it was.

        FailedPreconditionError while the job is live: cancel it first.
        """
        return await self._send(calls.delete_job(job_id, timeout_s))

    async def get_report(self, job_id: str, *, timeout_s: float | None = None) -> Report:
        """The report of a succeeded job (FailedPreconditionError before it succeeds)."""
        return await self._send(calls.get_report(job_id, timeout_s))
