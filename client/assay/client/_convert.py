"""Proto messages -> SDK types, and user images -> Image messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from assay.client import _types as t
from assay.client._aigen import generated_verdict
from assay.v1 import common_pb2, datasets_pb2, inference_pb2, models_pb2, ood_pb2
from assay.v1.tensor_codec import DTYPES, from_array, to_array

ImageLike = str | os.PathLike[str] | bytes | np.ndarray | Any
"""A path, encoded bytes, a uint8 HxW / HxWxC array, a float array (already
preprocessed model input) or a PIL image."""


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def image_message(image: ImageLike, image_id: str = "") -> common_pb2.Image:
    """Build an Image message from any supported image-like value."""
    if isinstance(image, (str, os.PathLike)):
        return common_pb2.Image(encoded=Path(image).read_bytes(), id=image_id or str(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return common_pb2.Image(encoded=bytes(image), id=image_id)
    if not isinstance(image, np.ndarray) and hasattr(image, "convert"):  # PIL image
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8 and image.ndim in (2, 3):
            pixels = image[:, :, None] if image.ndim == 2 else image
            height, width, channels = pixels.shape
            raw = common_pb2.RawImage(
                height=height,
                width=width,
                channels=channels,
                data=np.ascontiguousarray(pixels).tobytes(),
            )
            return common_pb2.Image(raw=raw, id=image_id)
        return common_pb2.Image(tensor=from_array(image), id=image_id)
    raise TypeError(
        f"unsupported image type {type(image).__name__}; pass a path, bytes, "
        "a numpy array or a PIL image"
    )


def predictions(response: inference_pb2.PredictResponse) -> list[t.Prediction]:
    """PredictResponse -> predictions in request order."""
    return [
        t.Prediction(
            id=result.id,
            top_k=[t.Classification(c.index, c.label, c.probability) for c in result.top_k],
            outputs={key: to_array(tensor) for key, tensor in result.outputs.items()},
            ood=[ood_score(o) for o in result.ood],
            aigen=generated_verdict(result.aigen) if result.HasField("aigen") else None,
            anomaly=[ood_score(a) for a in result.anomaly],
        )
        for result in response.results
    ]


def ood_score(message: ood_pb2.OodScore) -> t.OodScore:
    """OodScore message -> OodScore."""
    return t.OodScore(
        message.scorer, message.score, message.threshold, message.is_ood, message.holdout_tail
    )


def anomaly_result(message: ood_pb2.AnomalyResult) -> t.AnomalyResult:
    """AnomalyResult message -> AnomalyResult."""
    heat = to_array(message.map).astype(np.float32) if message.HasField("map") else None
    return t.AnomalyResult(
        message.id,
        message.score,
        message.threshold,
        message.is_anomalous,
        message.holdout_tail,
        heat,
    )


def dataset_info(message: datasets_pb2.Dataset) -> t.DatasetInfo:
    """Dataset message -> DatasetInfo."""
    return t.DatasetInfo(
        name=message.name,
        path=message.path,
        version=message.version,
        files=message.files,
        bytes=message.bytes,
        created_at=t.epoch_seconds(message.created_at),
        uploaded_by=message.uploaded_by,
    )


def ood_profile(message: ood_pb2.OodProfile) -> t.OodProfileInfo:
    """OodProfile message -> OodProfileInfo."""
    return t.OodProfileInfo(
        model=message.model.name,
        version=message.model.version,
        default_scorer=message.default_scorer,
        target_tpr=message.target_tpr,
        thresholds={s.scorer: s.threshold for s in message.scorers},
        created_at=t.epoch_seconds(message.created_at),
        problem=message.problem,
    )


def _spec(spec: models_pb2.TensorSpec) -> t.TensorSpec:
    dtype = DTYPES.get(spec.dtype)
    return t.TensorSpec(
        spec.name, dtype.name if dtype is not None else "unknown", tuple(spec.shape), spec.role
    )


def model_info(info: models_pb2.ModelInfo) -> t.ModelInfo:
    """ModelInfo message -> ModelInfo dataclass."""
    p = info.preprocessing
    dtype = DTYPES.get(p.dtype)
    return t.ModelInfo(
        name=info.name,
        version=info.version,
        task=_enum_name(models_pb2.ModelTask, info.task, "MODEL_TASK_"),
        description=info.description,
        backend=info.backend,
        inputs=tuple(_spec(s) for s in info.inputs),
        outputs=tuple(_spec(s) for s in info.outputs),
        labels=tuple(info.labels),
        preprocessing=t.Preprocessing(
            height=p.height,
            width=p.width,
            resize=_enum_name(models_pb2.ResizePolicy, p.resize, "RESIZE_POLICY_"),
            crop_fraction=p.crop_fraction,
            color=_enum_name(models_pb2.ColorMode, p.color, "COLOR_MODE_"),
            layout=_enum_name(models_pb2.Layout, p.layout, "LAYOUT_"),
            scale=p.scale,
            mean=tuple(p.mean),
            std=tuple(p.std),
            dtype=dtype.name if dtype is not None else "unknown",
            interpolation=p.interpolation,
        ),
        ready=info.ready,
        max_batch_size=info.max_batch_size,
        status=info.status,
    )
