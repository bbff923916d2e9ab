"""Shared ONNX export and verification helpers for the model-import scripts.

Every model assay serves is exported the same way (TorchScript exporter, opset 17,
dynamic batch dimension, weights stored inside the single ``.onnx`` file) and is
checked the same way (ONNX Runtime must reproduce the PyTorch outputs), so the
scripts in this folder share this module instead of each carrying a copy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx
    import onnxruntime
    import torch

BATCH_AXIS = "batch"


def export_onnx(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_names: Sequence[str],
    opset: int = 17,
) -> Path:
    """Export ``module`` (in eval mode) to a single self-contained ONNX file.

    Dimension 0 of the input and of every output is exported as the symbolic
    dimension ``batch``.  Constant subgraphs left by the exporter are folded and
    output shapes re-inferred (see :func:`fold_constants`), every non-batch
    dimension of every output must then be static, and the file must pass the
    ONNX checker.
    """
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    dynamic_axes = {name: {0: BATCH_AXIS} for name in (input_name, *output_names)}
    with torch.no_grad(), warnings.catch_warnings():
        # Emitted for the padding subgraphs that fold_constants() folds below.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            external_data=False,
            do_constant_folding=True,
        )
    model = fold_constants(onnx.load(str(path)))
    _assert_self_contained(model, path)
    _assert_io_names(model, input_name, output_names)
    _assert_static_except_batch(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def fold_constants(model: onnx.ModelProto, max_elements: int = 4096) -> onnx.ModelProto:
    """Evaluate small all-constant nodes and store their results as initializers.

    The TorchScript exporter writes a constant padding like ``nn.ZeroPad2d``
    (which EfficientNet's "same" convolutions use) as a chain of
    ConstantOfShape/Concat/Slice(step -1)/Transpose nodes that its own folding
    pass cannot fold.  Until those are folded ONNX shape inference cannot tell
    the spatial size of anything downstream, and the exporter labels the
    outputs with made-up symbolic dimensions.  After folding, the stale shapes
    are dropped and re-inferred; dimension 0 of every output is named ``batch``.
    """
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept, folded = [], {}
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.domain in ("", "ai.onnx") and all(name in known for name in inputs):
            results = ReferenceEvaluator(node).run(None, {name: known[name] for name in inputs})
            if all(np.asarray(r).size <= max_elements for r in results):
                for name, value in zip(node.output, results, strict=True):
                    known[name] = folded[name] = np.asarray(value)
                continue
        kept.append(node)
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    initializers = [init for init in graph.initializer if init.name in used]
    initializers += [numpy_helper.from_array(v, name) for name, v in folded.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    for output in graph.output:
        output.type.tensor_type.ClearField("shape")
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = BATCH_AXIS
    return model


def _assert_static_except_batch(model: onnx.ModelProto) -> None:
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") for d in dims[1:]):
            shape = [d.dim_param or d.dim_value for d in dims]
            raise RuntimeError(f"output {output.name!r} has a non-static shape {shape}")


def _assert_self_contained(model: object, path: Path) -> None:
    import onnx

    external = [
        init.name
        for init in model.graph.initializer  # type: ignore[attr-defined]
        if init.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise RuntimeError(f"{path}: {len(external)} initializers stored as external data")


def _assert_io_names(model: object, input_name: str, output_names: Sequence[str]) -> None:
    graph = model.graph  # type: ignore[attr-defined]
    initializers = {init.name for init in graph.initializer}
    got_inputs = [vi.name for vi in graph.input if vi.name not in initializers]
    got_outputs = [vi.name for vi in graph.output]
    if got_inputs != [input_name] or got_outputs != list(output_names):
        raise RuntimeError(
            f"exported graph has inputs {got_inputs} and outputs {got_outputs}, "
            f"expected [{input_name!r}] and {list(output_names)}"
        )


def ort_session(path: Path, threads: int = 2) -> onnxruntime.InferenceSession:
    """A CPU ONNX Runtime session with a fixed thread count."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_ort(
    session: onnxruntime.InferenceSession, x: np.ndarray, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Run ``x`` through the session in chunks; returns outputs by name."""
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    chunks = [
        session.run(names, {input_name: x[i : i + batch_size]})
        for i in range(0, len(x), batch_size)
    ]
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(names)}


def run_torch(
    module: torch.nn.Module, x: np.ndarray, output_names: Sequence[str], batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Run ``x`` through a module returning a tuple of tensors, named like the ONNX outputs."""
    import torch

    module.eval()
    chunks = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs = module(torch.from_numpy(x[i : i + batch_size]))
            chunks.append([o.numpy() for o in outs])
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(output_names)}


def max_abs_diffs(
    expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]
) -> dict[str, float]:
    """Largest absolute difference per output name (shapes must match)."""
    diffs = {}
    for name, want in expected.items():
        got = actual[name]
        if got.shape != want.shape:
            raise RuntimeError(f"output {name!r}: shape {got.shape} != {want.shape}")
        diffs[name] = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    return diffs


def verify_against_torch(
    path: Path,
    module: torch.nn.Module,
    x: np.ndarray,
    atol: float,
    batch_size: int = 64,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Check ONNX Runtime reproduces ``module`` on ``x`` within ``atol``.

    Returns the ONNX Runtime outputs and the per-output max abs differences;
    raises RuntimeError if any difference is ``atol`` or more.  The first
    sample is also run as a batch of one, to exercise the dynamic batch axis.
    """
    session = ort_session(path)
    ort_out = run_ort(session, x, batch_size)
    names = list(ort_out)
    torch_out = run_torch(module, x, names, batch_size)
    diffs = max_abs_diffs(torch_out, ort_out)
    single = max_abs_diffs({k: v[:1] for k, v in torch_out.items()}, run_ort(session, x[:1], 1))
    for name in names:
        diffs[name] = max(diffs[name], single[name])
    bad = {k: v for k, v in diffs.items() if not v < atol}
    if bad:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by >= {atol}: {bad}")
    return ort_out, diffs


def file_size_mb(path: Path) -> float:
    """File size in megabytes (10**6 bytes)."""
    return path.stat().st_size / 1e6
