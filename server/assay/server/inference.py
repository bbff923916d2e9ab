"""Predict: preprocess a request's images, batch them, read classes and outputs.

Domain code: numpy in, dataclasses out; no grpc or protobuf here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from assay.server.aigen.detection import AigenDetectors, DetectQuery, DetectResult
from assay.server.aigen.verdicts import ImageVerdict
from assay.server.errors import FailedPreconditionError, InvalidArgumentError, ModelNotReadyError
from assay.server.models.config import OutputRole, Task
from assay.server.models.preprocess import ImageInput, Preprocessor, check_request_images
from assay.server.models.registry import ModelRegistry, ServedModel
from assay.server.ood.fitting import OodVerdict, default_scorer, verdicts
from assay.server.ood.profiles import ModelProfile
from assay.server.ood.service import OodProfiles, role_outputs
from assay.server.settings import ImageSettings
from assay.server.stats.softmax import softmax

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class PredictQuery:
    """One Predict request in domain terms."""

    model: str
    images: Sequence[ImageInput]
    version: str = ""
    ids: Sequence[str] = ()
    top_k: int = 0
    """0 = DEFAULT_TOP_K; clamped to the number of classes."""
    outputs: Sequence[str] = ()
    """Raw outputs to return, by role or by output name."""
    signals: Sequence[str] = ()
    """Trust signals computed from the same inference ("ood")."""


@dataclass(frozen=True)
class Classification:
    """One class and its probability."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class ImagePrediction:
    """The prediction for one image."""

    id: str
    top_k: list[Classification]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    ood: list[OodVerdict] = field(default_factory=list)
    anomaly: list[OodVerdict] = field(default_factory=list)
    aigen: ImageVerdict | None = None


@dataclass(frozen=True)
class PredictResult:
    """Predictions in request order, with the model that made them."""

    model: str
    version: str
    predictions: list[ImagePrediction]


@dataclass(frozen=True)
class Predictor:
    """Runs PredictQuery against the registry."""

    registry: ModelRegistry
    limits: ImageSettings
    pool: Executor
    """Decodes and preprocesses all but the smallest requests off the event loop."""
    ood: OodProfiles | None = None
    """Scores the "ood" and "anomaly" signals; None: those signals are refused."""
    aigen: AigenDetectors | None = None
    """Scores the "aigen" signal; None: it is refused."""

    async def predict(self, query: PredictQuery, deadline: float | None = None) -> PredictResult:
        """Predict every image of query; deadline is an absolute loop.time()."""
        model = self.registry.get(query.model, query.version)
        check_request_images(
            len(query.images),
            query.ids,
            self.limits.max_images_per_request,
            "images.max_images_per_request",
        )
        wanted = resolve_outputs(model, query.outputs)
        if not model.ready():
            raise ModelNotReadyError(
                f"model {model.name!r} is not ready ({model.status()}); retry later"
            )
        profile = await self._signal_profile(model, query.signals)
        detection = self._detect_generated(model, query)
        try:
            batch = await self._preprocess(model, query.images)
            outputs = await model.batcher.submit({model.input_name: batch}, deadline)
            model.observers.images.inc(len(query.images))
            predictions = build_predictions(model, outputs, query, wanted)
            if profile is not None:  # the same outputs feed the scorers: no second inference
                self._add_ood(model, profile, outputs, query.signals, predictions)
            if detection is not None:  # ran concurrently with the model
                generated = (await detection).results
                predictions = [
                    dataclasses.replace(p, aigen=v)
                    for p, v in zip(predictions, generated, strict=True)
                ]
        finally:
            if detection is not None and not detection.done():
                detection.cancel()
        return PredictResult(
            model=model.name, version=model.config.version, predictions=predictions
        )

    @staticmethod
    def _add_ood(
        model: ServedModel,
        profile: ModelProfile,
        outputs: dict[str, np.ndarray],
        signals: Sequence[str],
        predictions: list[ImagePrediction],
    ) -> None:
        roles = role_outputs(model, outputs)
        if "ood" in signals:
            judged = verdicts(profile, roles, [default_scorer(profile)])
            for prediction, verdict in zip(predictions, judged, strict=True):
                prediction.ood.extend(verdict)
            model.observers.record_ood(v for p in predictions for v in p.ood)
        if "anomaly" in signals:
            judged = verdicts(profile, roles, ["patchcore"])
            for prediction, verdict in zip(predictions, judged, strict=True):
                prediction.anomaly.extend(verdict)
            model.observers.record_anomaly(v for p in predictions for v in p.anomaly)

    def _detect_generated(
        self, model: ServedModel, query: PredictQuery
    ) -> asyncio.Task[DetectResult] | None:
        """The "aigen" signal as a task beside the model's own inference."""
        if "aigen" not in query.signals:
            return None
        if self.aigen is None:
            raise FailedPreconditionError("AI-generated detection is not enabled on this server")
        own = model.config.task is Task.AIGEN_DETECTOR
        detectors = [(model.name, model.config.version)] if own else []
        self.aigen.resolve(detectors)  # fail fast, before the model runs
        return asyncio.get_running_loop().create_task(
            self.aigen.detect(DetectQuery(query.images, detectors))
        )

    async def _signal_profile(
        self, model: ServedModel, signals: Sequence[str]
    ) -> ModelProfile | None:
        unknown = set(signals) - {"ood", "anomaly", "aigen"}
        if unknown:
            raise InvalidArgumentError(
                f"unknown signals {sorted(unknown)}; available: ood, anomaly, aigen"
            )
        signals = [s for s in signals if s != "aigen"]
        if not signals:
            return None
        if self.ood is None:
            raise FailedPreconditionError("OOD signals are not enabled on this server")
        profile = await self.ood.profile_for(model)
        if "anomaly" in signals and "patchcore" not in profile.scorers:
            raise FailedPreconditionError(
                f"the profile of {model.name!r} has no PatchCore memory for the anomaly signal; "
                'fit one with FitProfile scorers: ["patchcore"]'
            )
        return profile

    async def _preprocess(self, model: ServedModel, images: Sequence[ImageInput]) -> np.ndarray:
        """Headers on the loop; decoding inline for thumbnails, else on the pool."""
        start = time.perf_counter()
        prep: Preprocessor = model.preprocessor
        opened = prep.open(images)
        if prep.pixel_count(opened) <= self.limits.inline_max_pixels:
            batch = prep.build(opened)
        else:
            batch = await asyncio.get_running_loop().run_in_executor(self.pool, prep.build, opened)
        model.observers.preprocess_seconds.observe(time.perf_counter() - start)
        return batch


def resolve_outputs(model: ServedModel, requested: Sequence[str]) -> dict[str, str]:
    """Map each requested key (a role or an output name) to a backend output name."""
    names = {o.name for o in model.backend.metadata().outputs}
    roles = {role.value: name for role, name in model.config.outputs.items()}
    wanted = {}
    for key in requested:
        if key in roles:
            wanted[key] = roles[key]
        elif key in names:
            wanted[key] = key
        elif key == OutputRole.PROBABILITIES.value and OutputRole.LOGITS.value in roles:
            wanted[key] = key  # computed from logits
        else:
            raise InvalidArgumentError(
                f"model {model.name!r} has no output {key!r}; available: "
                f"{', '.join(sorted(set(roles) | names))}"
            )
    return wanted


def class_probabilities(model: ServedModel, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per-image class probabilities from the probabilities or logits output."""
    probs_name = model.output_name(OutputRole.PROBABILITIES)
    if probs_name is not None:
        return outputs[probs_name].astype(np.float32, copy=False)
    logits_name = model.output_name(OutputRole.LOGITS)
    if logits_name is None:
        return None
    return softmax(outputs[logits_name], np.float32)


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities of the k largest entries per row, descending.

    Ties keep the lower index first. A full sort is cheaper than partitioning
    for the small class counts of most image classifiers.
    """
    classes = probs.shape[-1]
    k = min(k, classes)
    if classes <= 64 * k:
        indices = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    else:
        part = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
        part.sort(axis=-1)  # stable tie order after the partition
        rows = np.arange(len(probs))[:, None]
        indices = part[rows, np.argsort(-probs[rows, part], axis=-1, kind="stable")]
    return indices, probs[np.arange(len(probs))[:, None], indices]


def build_predictions(
    model: ServedModel,
    outputs: dict[str, np.ndarray],
    query: PredictQuery,
    wanted: dict[str, str],
) -> list[ImagePrediction]:
    """Turn a request's slice of batch outputs into per-image predictions."""
    count = len(query.images)
    ids = list(query.ids) or [""] * count
    probs = class_probabilities(model, outputs)
    classes: list[list[Classification]] = [[] for _ in range(count)]
    if probs is not None:
        k = query.top_k or DEFAULT_TOP_K
        indices, values = top_k(probs.reshape(count, -1), k)
        labels = model.labels
        for row in range(count):
            classes[row] = [
                Classification(int(i), labels[i] if i < len(labels) else str(i), float(p))
                for i, p in zip(indices[row], values[row], strict=True)
            ]
    raw = {
        key: (
            probs if name == OutputRole.PROBABILITIES.value and probs is not None else outputs[name]
        )
        for key, name in wanted.items()
    }
    return [
        ImagePrediction(ids[row], classes[row], {key: value[row] for key, value in raw.items()})
        for row in range(count)
    ]
