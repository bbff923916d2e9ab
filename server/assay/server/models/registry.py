"""The model registry: loads every configured model and serves lookups.

Each entry becomes a ServedModel: backend + preprocessor + MicroBatcher,
validated against what the backend reports (input name and shape, output
roles, label count) so mismatches fail at start with both sides named.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from assay.server.errors import ConfigError, ModelNotFoundError
from assay.server.metrics import ServerMetrics
from assay.server.models.backend import BackendMetadata, ModelBackend, TensorInfo
from assay.server.models.batcher import Arrays, BatcherHooks, MicroBatcher
from assay.server.models.config import BackendKind, ModelConfig, OutputRole, Task
from assay.server.models.onnx_backend import OnnxBackend
from assay.server.models.preprocess import Preprocessor
from assay.server.settings import Settings, describe_validation_error

MANIFEST = "assay.yaml"


@dataclass(frozen=True)
class ModelObservers:
    """A model's metric children, labelled once at load instead of per request."""

    preprocess_seconds: Histogram
    images: Counter

    @classmethod
    def for_model(cls, metrics: ServerMetrics, name: str) -> ModelObservers:
        """Children of the server metrics for model `name`."""
        return cls(
            preprocess_seconds=metrics.preprocess_seconds.labels(model=name),
            images=metrics.images.labels(model=name),
        )


@dataclass
class ServedModel:
    """A loaded model and everything needed to run requests on it."""

    config: ModelConfig
    labels: tuple[str, ...]
    backend: ModelBackend
    preprocessor: Preprocessor
    batcher: MicroBatcher
    observers: ModelObservers

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
        """True when the backend can run requests."""
        return self.backend.ready()


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


def load_manifests(repository: Path) -> list[ModelConfig]:
    """Registry entries from `<repository>/<model>/assay.yaml` manifests."""
    if not repository.is_dir():
        raise ConfigError(f"model_repository {repository} is not a directory")
    configs = []
    for manifest in sorted(repository.glob(f"*/{MANIFEST}")):
        try:
            data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
            config = ModelConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, manifest)) from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read {manifest}: {exc}") from exc
        configs.append(config.resolved(manifest.parent))
    return configs


def model_configs(settings: Settings, default_repository: Path | None) -> list[ModelConfig]:
    """Inline entries plus the repository's manifests (the default one if neither is set)."""
    repository = settings.model_repository
    if repository is None and not settings.models:
        repository = default_repository
    configs = list(settings.models)
    if repository is not None:
        configs.extend(load_manifests(repository))
    return configs


def build_backend(config: ModelConfig, settings: Settings) -> ModelBackend:
    """Create the backend a registry entry asks for."""
    if config.backend is BackendKind.ONNX:
        assert config.path is not None  # checked by ModelConfig
        if not config.path.is_file():
            raise ConfigError(f"model {config.name!r}: path {config.path} does not exist")
        onnx = settings.onnx
        return OnnxBackend(
            config.path,
            intra_op_threads=onnx.intra_op_threads,
            inter_op_threads=onnx.inter_op_threads,
            session_workers=onnx.session_workers,
            providers=onnx.providers,
        )
    raise ConfigError(
        f"model {config.name!r}: backend {config.backend.value!r} is not available yet"
    )


def load_model(
    config: ModelConfig, backend: ModelBackend, settings: Settings, metrics: ServerMetrics
) -> ServedModel:
    """Validate config against the backend and assemble a ServedModel."""
    try:
        labels = config.load_labels()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    meta = backend.metadata()
    model_input = _check_input(config, meta)
    _check_outputs(config, meta, labels)
    batching = settings.batching
    override = config.batching
    max_batch = override.max_batch_size or batching.max_batch_size
    if meta.max_batch_size is not None:
        max_batch = min(max_batch, meta.max_batch_size)
    infer = _timed(backend, config.name, meta.kind, metrics)
    hooks = BatcherHooks(
        on_batch=metrics.batch_size.labels(model=config.name).observe,
        on_queue_depth=metrics.queue_depth.labels(model=config.name).set,
    )
    batcher = MicroBatcher(
        infer,
        max_batch_size=max_batch,
        max_delay_ms=override.max_delay_ms
        if override.max_delay_ms is not None
        else batching.max_delay_ms,
        max_queue=override.max_queue or batching.max_queue,
        max_inflight_batches=batching.max_inflight_batches,
        flush_when_idle=batching.flush_when_idle,
        name=config.name,
        hooks=hooks,
    )
    preprocessor = Preprocessor(config.input, model_input, settings.images.max_pixels)
    metrics.model_ready.labels(model=config.name).set(1 if backend.ready() else 0)
    observers = ModelObservers.for_model(metrics, config.name)
    return ServedModel(config, labels, backend, preprocessor, batcher, observers)


def _timed(backend: ModelBackend, model: str, kind: str, metrics: ServerMetrics):  # type: ignore[no-untyped-def]
    histogram = metrics.inference_seconds.labels(model=model, backend=kind)

    async def infer(inputs: Mapping[str, np.ndarray]) -> Arrays:
        start = time.perf_counter()
        try:
            return await backend.infer(inputs)
        finally:
            histogram.observe(time.perf_counter() - start)

    return infer


def _check_input(config: ModelConfig, meta: BackendMetadata) -> TensorInfo:
    spec = config.input
    if spec.name is None:
        if len(meta.inputs) != 1:
            names = [i.name for i in meta.inputs]
            raise ConfigError(f"model {config.name!r} has inputs {names}; set input.name to one")
        info = meta.inputs[0]
    else:
        try:
            info = meta.input(spec.name)
        except KeyError:
            names = [i.name for i in meta.inputs]
            raise ConfigError(
                f"model {config.name!r}: input.name {spec.name!r} is not a model input {names}"
            ) from None
    if info.dtype != np.dtype(spec.dtype.value):
        raise ConfigError(
            f"model {config.name!r}: input.dtype is {spec.dtype.value} but the model's "
            f"{info.name!r} is {info.dtype}"
        )
    if len(info.shape) != 3 or any(
        m not in (-1, s) for m, s in zip(info.shape, spec.shape, strict=True)
    ):
        raise ConfigError(
            f"model {config.name!r}: input spec gives shape {list(spec.shape)} "
            f"({spec.layout.value}) but the model's {info.name!r} is {list(info.shape)}"
        )
    return TensorInfo(info.name, info.dtype, spec.shape)


def _check_outputs(config: ModelConfig, meta: BackendMetadata, labels: tuple[str, ...]) -> None:
    names = {o.name for o in meta.outputs}
    for role, name in config.outputs.items():
        if name not in names:
            raise ConfigError(
                f"model {config.name!r}: outputs.{role.value} = {name!r} is not a model "
                f"output {sorted(names)}"
            )
    class_output = config.outputs.get(OutputRole.LOGITS) or config.outputs.get(
        OutputRole.PROBABILITIES
    )
    if config.task is Task.CLASSIFIER and class_output and labels:
        classes = meta.output(class_output).shape
        if classes and classes[-1] not in (-1, len(labels)):
            raise ConfigError(
                f"model {config.name!r}: labels list {len(labels)} classes but output "
                f"{class_output!r} has {classes[-1]}"
            )


def build_registry(
    settings: Settings, metrics: ServerMetrics, default_repository: Path | None = None
) -> ModelRegistry:
    """Load and validate every configured model."""
    served = []
    for config in model_configs(settings, default_repository):
        backend = build_backend(config, settings)
        served.append(load_model(config, backend, settings, metrics))
    if not served:
        raise ConfigError("no models configured: set model_repository or models")
    return ModelRegistry(served)
