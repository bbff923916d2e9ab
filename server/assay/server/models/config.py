"""Registry entries: what a model is, where it lives and how to feed it.

An entry comes either from the server settings (`models:`) or from an
`assay.yaml` manifest inside a Triton-style model repository folder. Every
field is validated at start, so a typo fails there with the field's name,
never at the first request.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.server.errors import InvalidArgumentError
from assay.server.profiles.names import check_name


def _resource_name(value: str, what: str) -> str:
    """The profiles' name rule (names and versions key stored profiles), as a ValueError."""
    try:
        return check_name(value, what)
    except InvalidArgumentError as exc:
        raise ValueError(str(exc)) from None


class Task(enum.StrEnum):
    """What the model computes."""

    CLASSIFIER = "classifier"
    FEATURE_EXTRACTOR = "feature_extractor"
    DETECTOR = "detector"
    AIGEN_DETECTOR = "aigen_detector"
    """Scores how likely an image is AI-generated (one logit or probability)."""


class BackendKind(enum.StrEnum):
    """Where the model runs."""

    ONNX = "onnx"
    TRITON = "triton"


class Resize(enum.StrEnum):
    """How an image reaches the input size (see ResizePolicy in models.proto)."""

    STRETCH = "stretch"
    CENTER_CROP = "center_crop"
    LETTERBOX = "letterbox"


class Color(enum.StrEnum):
    """Channel order the model expects."""

    RGB = "rgb"
    BGR = "bgr"
    GRAY = "gray"


class Layout(enum.StrEnum):
    """Input memory layout."""

    NCHW = "nchw"
    NHWC = "nhwc"


class Interpolation(enum.StrEnum):
    """Resampling filter used when resizing."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    AREA = "area"


class InputDType(enum.StrEnum):
    """Element type of the model input."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    UINT8 = "uint8"


class OutputRole(enum.StrEnum):
    """Meaning assay gives to a model output."""

    LOGITS = "logits"
    PROBABILITIES = "probabilities"
    FEATURES = "features"
    FEATURE_MAP = "feature_map"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class AigenPolicy(enum.StrEnum):
    """How an AI-generated-image detector sees an image."""

    RESIZE = "resize"
    """The input spec's resize (the detector's training policy)."""
    CROPS = "crops"
    """Native-resolution tiles of the input size; resampling would erase the
    up-sampling traces these detectors key on."""


class AigenAggregation(enum.StrEnum):
    """How per-crop scores pool into one image score."""

    TOP_K_MEAN = "top_k_mean"
    MAX = "max"


class AigenSpec(_Strict):
    """Scoring policy of an `aigen_detector` model."""

    policy: AigenPolicy = AigenPolicy.CROPS
    max_crops: Annotated[int, Field(ge=1, le=1024)] = 16
    """Cap on crops per image; an evenly spaced sub-grid is kept beyond it."""
    aggregation: AigenAggregation = AigenAggregation.TOP_K_MEAN
    top_k: Annotated[int, Field(ge=1, le=1024)] = 3
    generated_index: Annotated[int, Field(ge=0)] | None = None
    """Column of "generated" when the output has two classes; None = a single
    column (a logit, or the probability of "generated")."""


class InputSpec(_Strict):
    """How images become the model's input tensor."""

    name: str | None = None
    """Model input name; None means the model's only input."""
    height: Annotated[int, Field(gt=0, le=8192)]
    width: Annotated[int, Field(gt=0, le=8192)]
    resize: Resize = Resize.STRETCH
    crop_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    """For center_crop: the shorter side is resized to size / crop_fraction."""
    interpolation: Interpolation = Interpolation.BILINEAR
    pad_value: Annotated[int, Field(ge=0, le=255)] = 0
    """For letterbox: the fill value of padded pixels."""
    color: Color = Color.RGB
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Layout = Layout.NCHW
    dtype: InputDType = InputDType.FLOAT32

    @property
    def channels(self) -> int:
        """Number of channels the model sees."""
        return 1 if self.color is Color.GRAY else 3

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image input shape in the model's layout."""
        if self.layout is Layout.NCHW:
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    @model_validator(mode="after")
    def _check_normalisation(self) -> InputSpec:
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) not in (1, self.channels):
                raise ValueError(
                    f"input.{field} has {len(values)} values; give 1 or {self.channels} "
                    f"(one per channel for color={self.color.value})"
                )
        if any(s == 0 for s in self.std):
            raise ValueError("input.std must not contain 0")
        return self


class BatchingOverride(_Strict):
    """Per-model batching settings; unset fields use the server defaults."""

    max_batch_size: Annotated[int, Field(ge=1, le=4096)] | None = None
    max_delay_ms: Annotated[float, Field(ge=0.0, le=10_000.0)] | None = None
    max_queue: Annotated[int, Field(ge=1)] | None = None


class TritonModelRef(_Strict):
    """Where a `backend: triton` model is served."""

    url: str | None = None
    """host:port of Triton's gRPC endpoint; None = settings.triton.url."""
    model: str | None = None
    """Triton's model name; None = the registry entry's name."""
    version: str = ""
    """Triton model version; empty = Triton's latest."""


class ModelConfig(_Strict):
    """One registry entry."""

    name: str
    version: str = "1"
    task: Task = Task.CLASSIFIER
    description: str = ""
    backend: BackendKind = BackendKind.ONNX
    path: Path | None = None
    """ONNX file (backend onnx). Relative paths are resolved against the
    folder of the file that declared the entry."""
    labels_file: Path | None = None
    labels: tuple[str, ...] | None = None
    """Inline class names; an alternative to labels_file."""
    input: InputSpec
    outputs: dict[OutputRole, str] = Field(default_factory=dict)
    """Role -> model output name."""
    batching: BatchingOverride = BatchingOverride()
    torchscript: Path | None = None
    """A differentiable TorchScript copy (same input, returns the class scores)
    that enables white-box attacks (FGSM, PGD); relative to the declaring file."""
    triton: TritonModelRef = TritonModelRef()
    """For backend triton. Shapes, dtypes, batch size and labels are read
    from Triton; only the preprocessing and output roles are assay's."""
    aigen: AigenSpec = AigenSpec()
    """For task aigen_detector: crops or resize, crop cap and aggregation."""

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        return _resource_name(value, "version")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _resource_name(value, "name")

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        if self.backend is BackendKind.ONNX and self.path is None:
            raise ValueError(f"model {self.name!r}: backend onnx needs 'path' (the .onnx file)")
        if self.task is Task.CLASSIFIER and not (
            {OutputRole.LOGITS, OutputRole.PROBABILITIES} & self.outputs.keys()
        ):
            raise ValueError(
                f"model {self.name!r}: a classifier needs outputs.logits or outputs.probabilities"
            )
        if self.task is Task.AIGEN_DETECTOR and not (
            {OutputRole.LOGITS, OutputRole.PROBABILITIES} & self.outputs.keys()
        ):
            raise ValueError(
                f"model {self.name!r}: an aigen_detector needs outputs.logits (a logit of "
                "'generated') or outputs.probabilities"
            )
        if self.labels is not None and self.labels_file is not None:
            raise ValueError(f"model {self.name!r}: give labels or labels_file, not both")
        return self

    def resolved(self, base_dir: Path) -> ModelConfig:
        """Return a copy whose relative paths are anchored at base_dir."""
        updates: dict[str, Path] = {}
        for field in ("path", "labels_file", "torchscript"):
            value: Path | None = getattr(self, field)
            if value is not None and not value.is_absolute():
                updates[field] = (base_dir / value).resolve()
        return self.model_copy(update=updates)

    def load_labels(self) -> tuple[str, ...]:
        """Class names from labels or labels_file; empty when neither is set."""
        if self.labels is not None:
            return self.labels
        if self.labels_file is None:
            return ()
        try:
            text = self.labels_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"model {self.name!r}: cannot read labels_file: {exc}") from exc
        return tuple(line.strip() for line in text.splitlines() if line.strip())
