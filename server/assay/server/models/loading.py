"""Loading the registry: manifests and inline entries -> bound ServedModels.

ONNX models are bound at load; a mismatch stops the server with a message.
Triton models are bound when Triton answers: at start if it is up (a
mismatch stops the server), else later by the backend's reconnect loop,
while the server already serves everything else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from assay.server.errors import ConfigError
from assay.server.metrics import ServerMetrics
from assay.server.models.backend import BackendMetadata, ModelBackend, TensorInfo
from assay.server.models.batcher import Arrays, BatcherHooks, MicroBatcher
from assay.server.models.config import BackendKind, ModelConfig
from assay.server.models.onnx_backend import OnnxBackend
from assay.server.models.preprocess import Preprocessor
from assay.server.models.registry import ModelObservers, ModelRegistry, ServedModel
from assay.server.models.triton_backend import TritonBackend, TritonOptions
from assay.server.settings import Settings, describe_validation_error

log = logging.getLogger(__name__)

MANIFEST = "assay.yaml"


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


def _onnx_backend(config: ModelConfig, settings: Settings) -> OnnxBackend:
    assert config.path is not None  # checked by ModelConfig
    if not config.path.is_file():
        raise ConfigError(f"model {config.name!r}: path {config.path} does not exist")
    # OnnxSettings' fields are OnnxBackend's keyword arguments, name for name.
    return OnnxBackend(config.path, **settings.onnx.model_dump())


def _triton_backend(config: ModelConfig, settings: Settings) -> TritonBackend:
    # TritonSettings' connection fields are TritonOptions' fields, name for name;
    # only the endpoint may be overridden per model.
    connection = settings.triton.model_dump(exclude={"url"})
    return TritonBackend(
        TritonOptions(
            url=config.triton.url or settings.triton.url,
            model=config.triton.model or config.name,
            version=config.triton.version,
            outputs=tuple(dict.fromkeys(config.outputs.values())),
            **connection,
        )
    )


def assemble(
    config: ModelConfig, backend: ModelBackend, settings: Settings, metrics: ServerMetrics
) -> ServedModel:
    """A ServedModel for config on backend, not yet bound."""
    try:
        labels = config.load_labels()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    batching, override = settings.batching, config.batching
    max_batch = override.max_batch_size or batching.max_batch_size
    hooks = BatcherHooks(
        on_batch=metrics.batch_size.labels(model=config.name).observe,
        on_queue_depth=metrics.queue_depth.labels(model=config.name).set,
    )
    batcher = MicroBatcher(
        _timed(backend, config.name, getattr(backend, "kind", "unknown"), metrics),
        max_batch_size=max_batch,
        max_delay_ms=batching.max_delay_ms
        if override.max_delay_ms is None
        else override.max_delay_ms,
        max_queue=override.max_queue or batching.max_queue,
        max_inflight_batches=batching.max_inflight_batches,
        flush_when_idle=batching.flush_when_idle,
        name=config.name,
        hooks=hooks,
    )
    spec = config.input
    placeholder = TensorInfo(spec.name or "input", np.dtype(spec.dtype.value), spec.shape)
    return ServedModel(
        config=config,
        backend=backend,
        preprocessor=Preprocessor(spec, placeholder, settings.images.max_pixels),
        batcher=batcher,
        observers=ModelObservers.for_model(metrics, config.name),
        configured_labels=labels,
        max_batch_size=max_batch,
    )


async def load_model(
    config: ModelConfig, settings: Settings, metrics: ServerMetrics
) -> ServedModel:
    """Create the entry's backend and bind the model (Triton: if it answers now)."""
    if config.backend is BackendKind.ONNX:
        onnx = _onnx_backend(config, settings)
        served = assemble(config, onnx, settings, metrics)
        await served.bind(onnx.metadata())
        return served
    triton = _triton_backend(config, settings)
    served = assemble(config, triton, settings, metrics)

    async def bind(meta: BackendMetadata, backend: TritonBackend) -> None:
        await served.bind(meta, backend.fetch_labels)

    triton.validator = bind
    if not await triton.connect():
        log.warning(
            "model %r is not ready: %s; retrying in the background", config.name, triton.problem
        )
    triton.start()
    return served


def _timed(backend: ModelBackend, model: str, kind: str, metrics: ServerMetrics):  # type: ignore[no-untyped-def]
    histogram = metrics.inference_seconds.labels(model=model, backend=kind)

    async def infer(inputs: Mapping[str, np.ndarray]) -> Arrays:
        start = time.perf_counter()
        try:
            return await backend.infer(inputs)
        finally:
            histogram.observe(time.perf_counter() - start)

    return infer


async def build_registry(
    settings: Settings, metrics: ServerMetrics, default_repository: Path | None = None
) -> ModelRegistry:
    """Load every configured model; ConfigError stops the server with the reason."""
    served = []
    try:
        for config in model_configs(settings, default_repository):
            served.append(await load_model(config, settings, metrics))
        if not served:
            raise ConfigError("no models configured: set model_repository or models")
        return ModelRegistry(served)
    except BaseException:
        await ModelRegistry(served).aclose()
        raise
