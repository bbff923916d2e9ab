"""deploy/models/export_cnndetection.py: key layout, checkpoint formats, ONNX parity, files."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml
from prometheus_client import CollectorRegistry

from assay.server.metrics import ServerMetrics
from assay.server.models.config import AigenPolicy, ModelConfig, OutputRole, Task
from assay.server.models.loading import build_registry
from assay.server.settings import load_settings
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "deploy" / "models"))
import export_cnndetection as ec
import onnx_utils
from triton_config import check_with_tritonclient

ATOL = 1e-4


def torchvision_resnet50_keys() -> set[str]:
    """torchvision's resnet50 state-dict names, spelled out independently of our module."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", *(f"bn1.{p}" for p in bn), "fc.weight", "fc.bias"}
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            for i in (1, 2, 3):
                keys |= {f"{prefix}.conv{i}.weight", *(f"{prefix}.bn{i}.{p}" for p in bn)}
            if block == 0:
                keys |= {
                    f"{prefix}.downsample.0.weight",
                    *(f"{prefix}.downsample.1.{p}" for p in bn),
                }
    return keys


def random_detector(seed: int = 0) -> ec.ResNet50:
    """A seeded detector with torchvision-like init and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ec.ResNet50()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
        for name, buffer in model.named_buffers():  # so that BN folding errors would show
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.5)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 4.0)
            else:
                buffer.fill_(1000)  # num_batches_tracked
    return model.eval()


@dataclass(frozen=True)
class Checkpoints:
    model: ec.ResNet50
    release: Path
    """The public release's layout: {"model": state_dict, "optimizer": ..., "total_steps": ...}."""
    others: tuple[Path, ...]
    """The same weights as a DataParallel raw state dict, and in torch < 1.6's file format."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    root = tmp_path_factory.mktemp("cnndetection_ckpt")
    model = random_detector()
    state = model.state_dict()
    release, data_parallel, legacy = root / "release.pth", root / "dp.pth", root / "legacy.pth"
    torch.save({"model": state, "optimizer": {}, "total_steps": 0}, release)
    torch.save({f"module.{k}": v for k, v in state.items()}, data_parallel)
    adam = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999)).state_dict()
    checkpoint = {"model": state, "optimizer": adam, "total_steps": 123}
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    return Checkpoints(model, release, (data_parallel, legacy))


@pytest.fixture(scope="module")
def exported(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> ec.ExportResult:
    repo = tmp_path_factory.mktemp("model_repository")
    return ec.export(checkpoints.release, repo, verify_batch=2)


def test_key_layout_is_torchvisions() -> None:
    state = ec.ResNet50().state_dict()
    assert len(state) == 320
    assert set(state) == torchvision_resnet50_keys()
    assert "layer4.2.bn3.running_var" in state
    assert tuple(state["fc.weight"].shape) == (1, 2048)
    assert tuple(state["fc.bias"].shape) == (1,)
    assert tuple(state["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(state["layer4.0.conv2.weight"].shape) == (512, 512, 3, 3)


def test_stride_sits_on_the_3x3_conv() -> None:
    model = ec.ResNet50()
    for layer in (model.layer2, model.layer3, model.layer4):
        first = layer[0]
        assert first.conv1.stride == (1, 1)
        assert first.conv2.stride == (2, 2)
        assert first.downsample is not None
        assert first.downsample[0].stride == (2, 2)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 53 and all(m.eps == 1e-5 for m in norms)
    with torch.no_grad():
        assert tuple(model.eval()(torch.zeros(1, 3, 64, 64)).shape) == (1, 1)


def test_release_dataparallel_and_legacy_files_load_the_same(checkpoints: Checkpoints) -> None:
    want = checkpoints.model.state_dict()
    for path in (checkpoints.release, *checkpoints.others):
        assert set(ec.load_state_dict(path)) == torchvision_resnet50_keys()
        detector = ec.load_detector(path)
        assert not detector.training
        got = detector.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)  # BN statistics included


def test_checkpoint_without_batch_counters_loads(checkpoints: Checkpoints, tmp_path: Path) -> None:
    """torch < 0.4.1 wrote no num_batches_tracked; eval never reads it."""
    state = checkpoints.model.state_dict()
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, path)
    got = ec.load_detector(path).state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items() if "num_batches_tracked" not in k)


def dims(value_info: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_onnx_matches_torch(checkpoints: Checkpoints, exported: ec.ExportResult) -> None:
    assert exported.max_abs_diff <= ATOL
    assert exported.onnx_mb > 90  # weights are inside the single file
    model = onnx.load(str(exported.onnx_path), load_external_data=False)
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and out.name == "logit"
    assert dims(inp) == ["batch", 3, 224, 224] and dims(out) == ["batch", 1]

    x = ec.verification_batch(3, seed=7)  # another batch size and seed than the export's check
    session = onnxruntime.InferenceSession(
        str(exported.onnx_path), providers=["CPUExecutionProvider"]
    )
    (got,) = session.run(["logit"], {"image": x})
    with torch.no_grad():
        want = checkpoints.model(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 1)
    assert float(np.max(np.abs(got - want))) <= ATOL
    assert float(np.ptp(want)) > 1e-3  # the random model is not constant


def test_config_and_manifest(exported: ec.ExportResult) -> None:
    assert exported.model_dir.name == "cnndetection_rn50"
    assert exported.onnx_path == exported.model_dir / "1" / "model.onnx"
    config_text = exported.config_path.read_text(encoding="utf-8")
    assert check_with_tritonclient(config_text) in (True, None)
    assert 'name: "cnndetection_rn50"' in config_text
    assert 'platform: "onnxruntime_onnx"' in config_text
    assert "max_batch_size: 32" in config_text
    assert "dims: [ 3, 224, 224 ]" in config_text and "dims: [ 1 ]" in config_text

    config = ModelConfig.model_validate(yaml.safe_load(exported.manifest_path.read_text()))
    assert config.task is Task.AIGEN_DETECTOR
    assert config.outputs == {OutputRole.LOGITS: "logit"}
    assert config.labels_file is None and config.labels is None
    assert config.path == Path("1/model.onnx")
    assert config.aigen.policy is AigenPolicy.CROPS
    assert (config.aigen.max_crops, config.aigen.top_k) == (8, 3)
    spec = config.input
    assert (spec.name, spec.height, spec.width, spec.color.value) == ("image", 224, 224, "rgb")
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert spec.scale == pytest.approx(1 / 255)
    assert "1/model.onnx" in (exported.model_dir / ".gitignore").read_text().splitlines()
    assert sorted(p.name for p in exported.model_dir.iterdir()) == [
        ".gitignore", "1", "assay.yaml", "config.pbtxt"
    ]  # fmt: skip


async def test_registry_serves_the_export(
    checkpoints: Checkpoints, exported: ec.ExportResult, tmp_path: Path
) -> None:
    settings = load_settings(
        model_repository=str(exported.model_dir.parent),
        data={"dir": str(tmp_path)},
        onnx={"intra_op_threads": 2},
    )
    registry = await build_registry(settings, ServerMetrics(CollectorRegistry()))
    try:
        served = registry.get("cnndetection_rn50")
        assert served.ready(), served.status()
        # assay's own preprocessing of 224x224 uint8 crops == CNNDetection's ToTensor+Normalize.
        pixels = np.random.default_rng(5).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
        outputs = await served.batcher.submit(
            {served.input_name: served.preprocessor.normalise(pixels)}
        )
        mean, std = np.array(ec.MEAN), np.array(ec.STD)
        reference = ((pixels / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
        with torch.no_grad():
            want = checkpoints.model(torch.from_numpy(reference)).numpy()
        assert float(np.max(np.abs(outputs["logit"] - want))) <= ATOL
    finally:
        await registry.aclose()


def corrupt(state: dict[str, torch.Tensor], case: str) -> object:
    state = dict(state)
    if case == "missing":
        for key in [k for k in state if k.startswith("layer4.2.")]:
            del state[key]
    elif case == "imagenet_fc":
        state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    elif case == "unexpected":
        state["fc2.weight"] = torch.zeros(1, 1)
    elif case == "not_a_state_dict":
        return {"state": state, "epoch": 3}
    elif case == "tensor":
        return torch.zeros(3)
    return {"model": state, "optimizer": {}, "total_steps": 0}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "missing",
            r"not a CNNDetection ResNet-50 state dict: 15 missing keys \(layer4\.2\.bn1\.bias",
        ),
        ("imagenet_fc", r"fc\.weight has shape \[1000, 2048\], expected \[1, 2048\].*ImageNet"),
        ("unexpected", r"1 unexpected keys \(fc2\.weight\)"),
        ("not_a_state_dict", r"expected a state dict of tensors; not tensors: epoch, state"),
        ("tensor", r"expected a state dict or \{'model': state_dict, \.\.\.\}, found Tensor"),
    ],
)
def test_bad_checkpoint_is_refused_with_the_reason(
    checkpoints: Checkpoints,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    path = tmp_path / f"{case}.pth"
    torch.save(corrupt(checkpoints.model.state_dict(), case), path)
    with pytest.raises(ec.CheckpointError, match=message):
        ec.load_detector(path)
    repo = tmp_path / "repo"
    assert ec.main([str(path), "--model-repo", str(repo)]) == 1
    assert "error: " in capsys.readouterr().err
    assert not (repo / "cnndetection_rn50").exists()


@pytest.mark.parametrize(("option", "value"), [("--name", "../escape"), ("--version", "0")])
def test_bad_options_are_refused(
    checkpoints: Checkpoints, tmp_path: Path, option: str, value: str
) -> None:
    assert ec.main([str(checkpoints.release), "--model-repo", str(tmp_path), option, value]) == 1
    assert list(tmp_path.iterdir()) == []


def test_unreadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ec.CheckpointError, match="cannot load as a weights-only checkpoint"):
        ec.load_state_dict(path)
    with pytest.raises(ec.CheckpointError, match="cannot read the checkpoint: No such file"):
        ec.load_state_dict(tmp_path / "absent.pth")


def test_failed_export_writes_nothing(
    checkpoints: Checkpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_written(module: object, example: object, path: Path, *args: object) -> Path:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"partial")
        raise RuntimeError("ONNX Runtime differs from PyTorch by >= 0.0001: {'logit': 1.0}")

    monkeypatch.setattr(onnx_utils, "export_onnx", half_written)  # export() imports it late
    with pytest.raises(RuntimeError, match="differs"):
        ec.export(checkpoints.release, tmp_path / "repo", verify_batch=1)
    assert list(tmp_path.iterdir()) == [tmp_path / "repo"]
    assert list((tmp_path / "repo").iterdir()) == []  # staging and the new model folder are gone

    existing = tmp_path / "repo" / "cnndetection_rn50"
    (existing / "1").mkdir(parents=True)
    (existing / "1" / "model.onnx").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="differs"):
        ec.export(checkpoints.release, tmp_path / "repo", verify_batch=1)
    assert [p.name for p in existing.iterdir()] == ["1"]  # an existing folder is left as it was
    assert (existing / "1" / "model.onnx").read_bytes() == b"old"
