"""The Triton configs: production config matches its ONNX file; the CPU variant is derived."""

import sys

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from assay.server.errors import ConfigError
from assay.server.models.triton_backend import TRITON_DTYPES, parse_metadata
from tests.conftest import REPOSITORY, ROOT

sys.path.insert(0, str(ROOT / "deploy" / "triton"))
import local_triton

MODELS = sorted(
    p.parent for p in REPOSITORY.glob("*/config.pbtxt") if list(p.parent.glob("*/model.onnx"))
)


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def triton_dtype(config_type: int) -> np.dtype:
    name = model_config_pb2.DataType.Name(config_type).removeprefix("TYPE_")
    return TRITON_DTYPES[name]


@pytest.mark.parametrize("model_dir", MODELS, ids=[m.name for m in MODELS])
def test_production_config_is_valid_for_its_onnx_file(model_dir) -> None:  # type: ignore[no-untyped-def]
    config = parse((model_dir / "config.pbtxt").read_text())
    session = ort.InferenceSession(
        str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert config.name == model_dir.name and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size > 0 and config.HasField("dynamic_batching")
    assert all(b <= config.max_batch_size for b in config.dynamic_batching.preferred_batch_size)
    ort_types = {"tensor(float)": np.dtype(np.float32), "tensor(uint8)": np.dtype(np.uint8)}
    for declared, actual in (
        (config.input, session.get_inputs()),
        (config.output, session.get_outputs()),
    ):
        assert [t.name for t in declared] == [a.name for a in actual]
        for tensor, node in zip(declared, actual, strict=True):
            assert triton_dtype(tensor.data_type) == ort_types[node.type]
            assert list(tensor.dims) == list(node.shape[1:]), tensor.name
    labels = [o.label_filename for o in config.output if o.label_filename]
    assert all((model_dir / name).is_file() for name in labels)


def test_cpu_variant_keeps_tensors_and_batching_but_runs_the_python_backend() -> None:
    production = parse((REPOSITORY / "digits_cnn" / "config.pbtxt").read_text())
    variant = parse(
        local_triton.cpu_variant((REPOSITORY / "digits_cnn" / "config.pbtxt").read_text())
    )
    assert variant.backend == "python" and not variant.platform
    assert [g.kind for g in variant.instance_group] == [
        model_config_pb2.ModelInstanceGroup.KIND_CPU
    ]
    for field in ("name", "max_batch_size", "input", "output", "dynamic_batching"):
        assert getattr(variant, field) == getattr(production, field), field


def test_generated_cpu_repository_links_the_production_onnx(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = local_triton.generate_cpu_repository(REPOSITORY, tmp_path / "repo", only=("digits_cnn",))
    version = out / "digits_cnn" / "1"
    assert (version / "model.onnx").resolve() == (
        REPOSITORY / "digits_cnn" / "1" / "model.onnx"
    ).resolve()
    assert (version / "model.py").read_text() == (
        ROOT / "deploy/triton/python_onnx/model.py"
    ).read_text()
    assert (out / "digits_cnn" / "labels.txt").is_file()


def test_cpu_variant_refuses_a_non_onnx_config() -> None:
    with pytest.raises(ValueError, match="expected platform onnxruntime_onnx"):
        local_triton.cpu_variant('name: "x"\nbackend: "python"\n')


def test_parse_metadata_strips_the_batch_dimension() -> None:
    metadata = {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": ["-1", "1", "28", "28"]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": ["-1", "10"]}],
    }
    meta = parse_metadata(metadata, {"max_batch_size": 64}, "m")
    assert meta.inputs[0].shape == (1, 28, 28) and meta.outputs[0].shape == (10,)
    assert meta.max_batch_size == 64 and meta.kind == "triton"
    unbatched = parse_metadata(
        {**metadata, "inputs": [{"name": "image", "datatype": "FP32", "shape": ["1", "28", "28"]}]},
        {},
        "m",
    )
    assert unbatched.inputs[0].shape == (1, 28, 28) and unbatched.max_batch_size == 1
    with pytest.raises(ConfigError, match="unsupported datatype BYTES"):
        parse_metadata(
            {"inputs": [{"name": "s", "datatype": "BYTES", "shape": ["-1"]}], "outputs": []},
            {},
            "m",
        )
