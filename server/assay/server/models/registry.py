"""The model registry: served models by name and version.

A ServedModel is a backend + preprocessor + MicroBatcher. It is *bound* to
what the backend reports (input name and shape, output roles, labels, batch
limit) before it serves: ONNX models at load, Triton models at every
(re)connect, so a changed model is re-validated, never trusted blindly.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from assay.server.errors import ConfigError, ModelNotFoundError
from assay.server.metrics import ServerMetrics
from assay.server.models.backend import BackendMetadata, ModelBackend, TensorInfo
from assay.server.models.batcher import MicroBatcher
from assay.server.models.binding import check_input, check_outputs, class_output
from assay.server.models.config import ModelConfig, OutputRole
from assay.server.models.preprocess import Preprocessor

LabelSource = Callable[[str, int, TensorInfo], Awaitable[tuple[str, ...]]]
"""Reads class names from the backend: (output name, class count, input) -> labels."""


@dataclass(frozen=True)
class ModelObservers:
    """A model's metric children, labelled once at load instead of per request."""

    preprocess_seconds: Histogram
    images: Counter
    metrics: ServerMetrics
    name: str

    @classmethod
    def for_model(cls, metrics: ServerMetrics, name: str) -> ModelObservers:
        """Children of the server metrics for model `name`."""
        return cls(
            preprocess_seconds=metrics.preprocess_seconds.labels(model=name),
            images=metrics.images.labels(model=name),
            metrics=metrics,
            name=name,
        )

    def record_ood(self, verdicts: Iterable[Any]) -> None:
        """OOD score ranks (holdout tail) and flags of served requests."""
        for verdict in verdicts:
            labels = {"model": self.name, "scorer": verdict.scorer}
            self.metrics.ood_tail.labels(**labels).observe(verdict.holdout_tail)
            if verdict.is_ood:
                self.metrics.ood_flagged.labels(**labels).inc()

    def record_anomaly(self, verdicts: Iterable[Any]) -> None:
        """Anomaly flags of served images."""
        flagged = sum(1 for v in verdicts if v.is_ood)
        if flagged:
            self.metrics.anomaly_flagged.labels(model=self.name).inc(flagged)


@dataclass
class ServedModel:
    """A model and everything needed to run requests on it."""

    config: ModelConfig
    backend: ModelBackend
    preprocessor: Preprocessor
    batcher: MicroBatcher
    observers: ModelObservers
    labels: tuple[str, ...] = ()
    configured_labels: tuple[str, ...] = ()
    max_batch_size: int = 1
    """Configured batch limit, before the backend's own limit is applied."""
    bound: bool = False
    problem: str | None = field(default="not bound to its backend yet")

    @property
    def name(self) -> str:
        """Registry name."""
        return self.config.name

    @property
    def input_name(self) -> str:
        """The backend input the preprocessor feeds."""
        return self.preprocessor.model_input.name

    def output_name(self, role: OutputRole) -> str | None:
        """The backend output with that role, if the model has one."""
        return self.config.outputs.get(role)

    def ready(self) -> bool:
        """True when the backend can run requests and the model is bound to it."""
        return self.bound and self.backend.ready()

    def status(self) -> str:
        """Why the model is not ready ('' when it is)."""
        if self.ready():
            return ""
        return getattr(self.backend, "problem", None) or self.problem or "backend not ready"

    async def bind(self, meta: BackendMetadata, read_labels: LabelSource | None = None) -> None:
        """Validate the entry against backend metadata and adopt its input, labels, batch limit.

        Raises:
            ConfigError: naming both the entry's and the backend's side.
        """
        model_input = check_input(self.config, meta)
        labels = self.configured_labels
        output = class_output(self.config)
        if not labels and read_labels is not None and output is not None:
            classes = meta.output(output).shape[-1] if meta.output(output).shape else -1
            if classes > 0:
                labels = await read_labels(output, classes, model_input)
        check_outputs(self.config, meta, labels)
        self.preprocessor = Preprocessor(
            self.config.input, model_input, self.preprocessor.max_pixels
        )
        self.labels = labels
        limit = meta.max_batch_size
        self.batcher.max_batch_size = (
            min(self.max_batch_size, limit) if limit else self.max_batch_size
        )
        self.bound, self.problem = True, None


class ModelRegistry:
    """Models by name and version."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self._models: dict[str, dict[str, ServedModel]] = {}
        for model in models:
            versions = self._models.setdefault(model.name, {})
            if model.config.version in versions:
                raise ConfigError(
                    f"model {model.name!r} version {model.config.version!r} is registered twice"
                )
            versions[model.config.version] = model

    def get(self, name: str, version: str = "") -> ServedModel:
        """The model called name; the highest version when version is empty."""
        versions = self._models.get(name)
        if not versions:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFoundError(f"no model named {name!r}; registered models: {known}")
        if not version:
            return versions[max(versions, key=_version_key)]
        if version not in versions:
            known = ", ".join(sorted(versions))
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; versions: {known}"
            )
        return versions[version]

    def all(self) -> list[ServedModel]:
        """Every model, sorted by name then version."""
        return [
            versions[v]
            for name in sorted(self._models)
            for versions in [self._models[name]]
            for v in sorted(versions, key=_version_key)
        ]

    async def aclose(self) -> None:
        """Stop every batcher, then every backend."""
        for model in self.all():
            await model.batcher.aclose()
            await model.backend.aclose()


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    parts = re.findall(r"\d+", version)
    return tuple(int(p) for p in parts) if parts else (float("-inf"), version)
