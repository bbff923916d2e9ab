"""Proto <-> domain conversion for every service.

The only module (with the servicers) that knows both the generated
messages and the domain types.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import Message

from assay.server.errors import InvalidArgumentError, InvalidImageError, InvalidTensorError
from assay.server.inference import PredictQuery, PredictResult
from assay.server.jobs.specs import SpecT, build_spec
from assay.server.models.backend import TensorInfo
from assay.server.models.config import Color, InputDType, Layout, Resize, Task
from assay.server.models.preprocess import EncodedImage, ImageInput, InputTensor, PixelImage
from assay.server.models.registry import ServedModel
from assay.server.ood.fitting import OodVerdict
from assay.server.services.aigen_converters import verdict_to_proto
from assay.server.services.mirror import mirrored
from assay.v1 import common_pb2, inference_pb2, models_pb2, ood_pb2
from assay.v1.tensor_codec import dtype_code, from_array, to_array

_TASKS = {
    Task.CLASSIFIER: models_pb2.MODEL_TASK_CLASSIFIER,
    Task.FEATURE_EXTRACTOR: models_pb2.MODEL_TASK_FEATURE_EXTRACTOR,
    Task.DETECTOR: models_pb2.MODEL_TASK_DETECTOR,
    Task.AIGEN_DETECTOR: models_pb2.MODEL_TASK_AIGEN_DETECTOR,
}
_RESIZE = {
    Resize.STRETCH: models_pb2.RESIZE_POLICY_STRETCH,
    Resize.CENTER_CROP: models_pb2.RESIZE_POLICY_CENTER_CROP,
    Resize.LETTERBOX: models_pb2.RESIZE_POLICY_LETTERBOX,
}
_COLOR = {
    Color.RGB: models_pb2.COLOR_MODE_RGB,
    Color.BGR: models_pb2.COLOR_MODE_BGR,
    Color.GRAY: models_pb2.COLOR_MODE_GRAY,
}
_LAYOUT = {Layout.NCHW: models_pb2.LAYOUT_NCHW, Layout.NHWC: models_pb2.LAYOUT_NHWC}


def image_to_domain(image: common_pb2.Image, index: int) -> ImageInput:
    """Image message -> domain input; errors name the image's index."""
    source = image.WhichOneof("source")
    if source == "encoded":
        return EncodedImage(image.encoded)
    if source == "raw":
        raw = image.raw
        expected = raw.height * raw.width * raw.channels
        if len(raw.data) != expected:
            raise InvalidImageError(
                f"image {index}: raw data has {len(raw.data)} bytes; "
                f"{raw.height}x{raw.width}x{raw.channels} needs {expected}"
            )
        array = np.frombuffer(raw.data, np.uint8).reshape(raw.height, raw.width, raw.channels)
        return PixelImage(array)
    if source == "tensor":
        try:
            return InputTensor(to_array(image.tensor))
        except ValueError as exc:
            raise InvalidTensorError(f"image {index}: {exc}") from None
    raise InvalidArgumentError(f"image {index} has no source; set encoded, raw or tensor")


def images_to_domain(images: Sequence[common_pb2.Image]) -> list[ImageInput]:
    """A request's images -> domain inputs, in order."""
    return [image_to_domain(image, i) for i, image in enumerate(images)]


def image_ids(images: Sequence[common_pb2.Image]) -> Sequence[str]:
    """The images' ids, or () when none is set."""
    ids = [image.id for image in images]
    return ids if any(ids) else ()


def optional(message: Message, field: str) -> Any:
    """A proto3 ``optional`` field's value, or None when unset (so the domain default applies)."""
    return getattr(message, field) if message.HasField(field) else None


def spec_from_request(spec_type: type[SpecT], request: Message, ref: str = "model") -> SpecT:
    """A job spec from the same-named fields of its Start request.

    The ModelRef field ``ref`` gives ``model`` and ``version``. A field the
    request leaves unset is left out, so the spec's default applies: proto3
    cannot tell an unset scalar from its zero value, so a zero or empty
    scalar counts as unset, as does an ``optional`` field without a value.
    Repeated fields are always passed (as lists): the spec says what empty means.

    Raises:
        InvalidArgumentError: A field does not validate (see `build_spec`).
    """
    model = getattr(request, ref)
    fields: dict[str, Any] = {"model": model.name, "version": model.version}
    for descriptor in request.DESCRIPTOR.fields:
        name = descriptor.name
        if name == ref or name not in spec_type.model_fields:
            continue
        value = getattr(request, name)
        if isinstance(value, MutableSequence):
            fields[name] = list(value)
        elif request.HasField(name) if descriptor.has_presence else value:
            fields[name] = value
    return build_spec(spec_type, **fields)


def require(*fields: tuple[str, str]) -> None:
    """INVALID_ARGUMENT naming the required fields when any of them is empty.

    Args:
        *fields: (field path as the caller spells it, its value) pairs.
    """
    if not all(value for _, value in fields):
        raise InvalidArgumentError(f"{' and '.join(name for name, _ in fields)} are required")


def served_ref(model: ServedModel) -> common_pb2.ModelRef:
    """The ModelRef of the model that answered (its version resolved)."""
    return common_pb2.ModelRef(name=model.name, version=model.config.version)


def predict_request_to_query(request: inference_pb2.PredictRequest) -> PredictQuery:
    """PredictRequest -> PredictQuery."""
    if not request.model.name:
        raise InvalidArgumentError("model.name is empty; name the model to run")
    return PredictQuery(
        model=request.model.name,
        version=request.model.version,
        images=images_to_domain(request.images),
        ids=image_ids(request.images),
        top_k=request.top_k,
        outputs=tuple(request.outputs),
        signals=tuple(request.signals),
    )


def predict_result_to_proto(result: PredictResult) -> inference_pb2.PredictResponse:
    """PredictResult -> PredictResponse."""
    response = inference_pb2.PredictResponse(
        model=common_pb2.ModelRef(name=result.model, version=result.version)
    )
    for prediction in result.predictions:
        item = response.results.add(id=prediction.id)
        for c in prediction.top_k:
            item.top_k.add(index=c.index, label=c.label, probability=c.probability)
        for key, value in prediction.outputs.items():
            item.outputs[key].CopyFrom(from_array(value))
        item.ood.extend(ood_score(v) for v in prediction.ood)
        item.anomaly.extend(ood_score(v) for v in prediction.anomaly)
        if prediction.aigen is not None:
            item.aigen.CopyFrom(verdict_to_proto(prediction.aigen))
    return response


def ood_score(verdict: OodVerdict) -> ood_pb2.OodScore:
    """OodVerdict -> OodScore."""
    return mirrored(ood_pb2.OodScore, verdict)


def _tensor_spec(info: TensorInfo, role: str = "") -> models_pb2.TensorSpec:
    return models_pb2.TensorSpec(
        name=info.name, dtype=dtype_code(info.dtype), shape=list(info.shape), role=role
    )


def model_to_proto(model: ServedModel) -> models_pb2.ModelInfo:
    """ServedModel -> ModelInfo."""
    config, spec = model.config, model.config.input
    meta = model.backend.metadata()
    roles = {name: role.value for role, name in config.outputs.items()}
    return models_pb2.ModelInfo(
        name=config.name,
        version=config.version,
        task=_TASKS[config.task],
        description=config.description,
        backend=meta.kind,
        inputs=[_tensor_spec(i) for i in meta.inputs],
        outputs=[_tensor_spec(o, roles.get(o.name, "")) for o in meta.outputs],
        labels=list(model.labels),
        preprocessing=mirrored(
            models_pb2.Preprocessing,
            spec,
            resize=_RESIZE[spec.resize],
            color=_COLOR[spec.color],
            layout=_LAYOUT[spec.layout],
            dtype=dtype_code(np.dtype(InputDType(spec.dtype).value)),
            interpolation=spec.interpolation.value,
        ),
        ready=model.ready(),
        max_batch_size=model.batcher.max_batch_size,
        status=model.status(),
    )
