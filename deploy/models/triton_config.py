"""Render Triton ``config.pbtxt`` files from the tensors an ONNX graph declares.

The model-repository configs live next to the models that assay serves.  Writing
them by hand invites drift (an output renamed in the export script but not in the
config), so the export scripts call :func:`specs_from_onnx` on the file they just
wrote and hand the result to :func:`render_onnx_config`.  The same renderer also
produces a Python-backend config (:func:`render_python_config`) for models that
need custom pre- or post-processing around the ONNX graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# ONNX TensorProto element types -> Triton data types.
_ONNX_TO_TRITON: dict[int, str] = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}

DYNAMIC = -1


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, Triton data type and full shape.

    ``dims`` includes the batch dimension; symbolic or unknown sizes are -1.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]


def _dims_of(value_info: object) -> tuple[int, ...]:
    shape = value_info.type.tensor_type.shape  # type: ignore[attr-defined]
    return tuple(d.dim_value if d.HasField("dim_value") else DYNAMIC for d in shape.dim)


def _spec_of(value_info: object) -> TensorSpec:
    elem_type = value_info.type.tensor_type.elem_type  # type: ignore[attr-defined]
    if elem_type not in _ONNX_TO_TRITON:
        raise ValueError(f"tensor {value_info.name!r}: unsupported ONNX element type {elem_type}")  # type: ignore[attr-defined]
    return TensorSpec(value_info.name, _ONNX_TO_TRITON[elem_type], _dims_of(value_info))  # type: ignore[attr-defined]


def specs_from_onnx(model_path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Read the graph inputs and outputs (in graph order) of an ONNX file."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_spec_of(vi) for vi in model.graph.input if vi.name not in initializers]
    outputs = [_spec_of(vi) for vi in model.graph.output]
    return inputs, outputs


def _per_item_dims(spec: TensorSpec, batched: bool) -> tuple[int, ...]:
    """Triton wants the shape without the batch dimension when batching is on."""
    if not batched:
        return spec.dims
    if not spec.dims or spec.dims[0] != DYNAMIC:
        raise ValueError(f"tensor {spec.name!r} has no dynamic batch dimension: {spec.dims}")
    return spec.dims[1:]


def _dims_text(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(spec: TensorSpec, batched: bool, label_filename: str | None) -> str:
    lines = [
        "  {",
        f'    name: "{spec.name}"',
        f"    data_type: {spec.data_type}",
        f"    dims: {_dims_text(_per_item_dims(spec, batched))}",
    ]
    if label_filename:
        lines.append(f'    label_filename: "{label_filename}"')
    lines.append("  }")
    return "\n".join(lines)


def _tensor_list(
    key: str, specs: Sequence[TensorSpec], batched: bool, label_files: Mapping[str, str]
) -> str:
    blocks = [_tensor_block(s, batched, label_files.get(s.name)) for s in specs]
    return f"{key} [\n" + ",\n".join(blocks) + "\n]"


def _dynamic_batching_block(
    preferred_batch_sizes: Sequence[int], max_queue_delay_us: int, max_batch_size: int
) -> str:
    too_big = [b for b in preferred_batch_sizes if b > max_batch_size]
    if too_big:
        raise ValueError(f"preferred batch sizes {too_big} exceed max_batch_size {max_batch_size}")
    lines = ["dynamic_batching {"]
    if preferred_batch_sizes:
        lines.append(f"  preferred_batch_size: {_dims_text(preferred_batch_sizes)}")
    lines.append(f"  max_queue_delay_microseconds: {max_queue_delay_us}")
    lines.append("}")
    return "\n".join(lines)


def _instance_group_block(count: int, kind: str) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]"


def render_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    *,
    platform: str | None = None,
    backend: str | None = None,
    label_files: Mapping[str, str] | None = None,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_delay_us: int = 500,
    instance_count: int = 1,
    instance_kind: str = "KIND_GPU",
) -> str:
    """Render a Triton model configuration in protobuf text format.

    Exactly one of ``platform`` (e.g. ``onnxruntime_onnx``) or ``backend``
    (e.g. ``python``) must be given.  ``label_files`` maps output names to a
    label file in the model directory.  Dynamic batching is enabled whenever
    ``max_batch_size`` is positive; ``preferred_batch_sizes`` defaults to the
    powers of two from 16 up to ``max_batch_size``.
    """
    if (platform is None) == (backend is None):
        raise ValueError("give exactly one of platform or backend")
    label_files = dict(label_files or {})
    unknown = set(label_files) - {o.name for o in outputs}
    if unknown:
        raise ValueError(f"label_files names unknown outputs: {sorted(unknown)}")
    batched = max_batch_size > 0
    header = [f'name: "{name}"']
    header.append(f'platform: "{platform}"' if platform else f'backend: "{backend}"')
    header.append(f"max_batch_size: {max_batch_size}")
    sections = [
        "\n".join(header),
        _tensor_list("input", inputs, batched, {}),
        _tensor_list("output", outputs, batched, label_files),
    ]
    if batched:
        if preferred_batch_sizes is None:
            preferred_batch_sizes = [b for b in (16, 32, 64, 128) if b <= max_batch_size]
        sections.append(
            _dynamic_batching_block(preferred_batch_sizes, max_queue_delay_us, max_batch_size)
        )
    sections.append(_instance_group_block(instance_count, instance_kind))
    return "\n".join(sections) + "\n"


def render_onnx_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    **options: object,
) -> str:
    """Config for serving an ONNX file with Triton's ONNX Runtime backend."""
    return render_config(
        name,
        inputs,
        outputs,
        max_batch_size,
        platform="onnxruntime_onnx",
        **options,  # type: ignore[arg-type]
    )


def render_python_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    **options: object,
) -> str:
    """Config for a Python-backend model (``model.py``) with the same tensors."""
    return render_config(
        name,
        inputs,
        outputs,
        max_batch_size,
        backend="python",
        **options,  # type: ignore[arg-type]
    )


def check_with_tritonclient(text: str) -> bool | None:
    """Parse ``text`` as Triton's ModelConfig proto if tritonclient is installed.

    Returns True when it parses, None when tritonclient is not available, and
    raises ``google.protobuf.text_format.ParseError`` when it does not parse.
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    text_format.Parse(text, model_config_pb2.ModelConfig())
    return True


def describe_check(path: Path) -> str:
    """One line saying whether the config file at ``path`` parses as a ModelConfig."""
    parsed = check_with_tritonclient(path.read_text(encoding="utf-8"))
    if parsed is None:
        return f"{path.name}: written (tritonclient not installed, not parsed)"
    return f"{path.name}: parses as a Triton ModelConfig"


def write_onnx_config(
    model_dir: Path,
    name: str,
    max_batch_size: int,
    onnx_relpath: str = "1/model.onnx",
    **options: object,
) -> Path:
    """Render ``model_dir/config.pbtxt`` from the ONNX file inside ``model_dir``."""
    inputs, outputs = specs_from_onnx(model_dir / onnx_relpath)
    text = render_onnx_config(name, inputs, outputs, max_batch_size, **options)
    path = model_dir / "config.pbtxt"
    path.write_text(text, encoding="utf-8")
    return path
