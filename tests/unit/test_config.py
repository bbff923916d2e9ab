from pathlib import Path

import pytest

from assay.server.errors import ConfigError
from assay.server.models.config import Color, ModelConfig
from assay.server.models.loading import load_manifests
from assay.server.settings import load_settings

ENTRY = {
    "name": "m",
    "path": "m.onnx",
    "input": {"height": 8, "width": 8},
    "outputs": {"logits": "y"},
}


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.grpc.port == 50051 and settings.metrics.port == 9464


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"grpc": {"port": 70000}}, "grpc.port"),
        ({"batching": {"max_batch_size": 0}}, "batching.max_batch_size"),
        ({"grpc": {"max_mesage_mb": 1}}, "grpc.max_mesage_mb"),
        ({"models": [{**ENTRY, "input": {"height": 8}}]}, "models.0.input.width"),
        (
            {"models": [{**ENTRY, "input": {"height": 8, "width": 8, "color": "cmyk"}}]},
            "models.0.input.color",
        ),
        ({"models": [{**ENTRY, "name": "bad name!"}]}, "models.0.name"),
        ({"models": [{**ENTRY, "version": "../../etc"}]}, "models.0.version"),
    ],
)
def test_invalid_settings_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert f"  {field}:" in str(info.value)


def test_environment_overrides_file_and_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "assay.yaml"
    config.write_text(
        "grpc:\n  port: 6000\n  max_message_mb: 8\nmodels:\n  - name: m\n    path: sub/m.onnx\n"
        "    input: {height: 8, width: 8}\n    outputs: {logits: y}\n"
    )
    monkeypatch.setenv("ASSAY_GRPC__PORT", "6001")
    settings = load_settings(config)
    assert settings.grpc.port == 6001
    assert settings.grpc.max_message_mb == 8
    assert settings.models[0].path == tmp_path / "sub" / "m.onnx"


def test_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "assay.toml"
    config.write_text("[batching]\nmax_delay_ms = 7.5\n")
    assert load_settings(config).batching.max_delay_ms == 7.5


def test_unreadable_or_malformed_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpc: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid yaml"):
        load_settings(bad)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backend": "onnx", "path": None}, "needs 'path'"),
        ({"outputs": {"features": "f"}}, "classifier needs outputs.logits"),
        ({"input": {"height": 8, "width": 8, "mean": [1, 2]}}, "input.mean has 2 values"),
        ({"input": {"height": 8, "width": 8, "std": [0]}}, "must not contain 0"),
        ({"labels": ["a"], "labels_file": "l.txt"}, "not both"),
        # the profiles' name rule: names and versions key stored profiles
        ({"name": "digits\n"}, r"name 'digits\\n' is not valid"),
        ({"name": "../m"}, "is not valid: use 1-128 characters"),
        ({"version": "1/2"}, "version '1/2' is not valid"),
        ({"name": "x" * 129}, "is not valid"),
    ],
)
def test_model_config_consistency(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig.model_validate({**ENTRY, **changes})


def test_committed_demo_manifests_load() -> None:
    repository = Path(__file__).resolve().parents[2] / "deploy" / "triton" / "model_repository"
    configs = {c.name: c for c in load_manifests(repository)}
    digits = configs["digits_cnn"]
    assert digits.input.color is Color.GRAY and digits.path is not None and digits.path.is_file()
    assert len(digits.load_labels()) == 10


def test_bad_manifest_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "assay.yaml").write_text(
        "name: m\npath: x.onnx\ninput: {height: -1, width: 8}\noutputs: {logits: y}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_manifests(tmp_path)
    assert "assay.yaml" in str(info.value) and "input.height" in str(info.value)


def test_backend_settings_reach_the_backends_name_for_name() -> None:
    """loading passes settings.onnx / settings.triton through by field name; a renamed field fails here."""
    import dataclasses
    import inspect

    from assay.server.models import loading
    from assay.server.models.onnx_backend import OnnxBackend
    from assay.server.models.triton_backend import TritonOptions
    from assay.server.settings import OnnxSettings, TritonSettings

    assert set(OnnxSettings.model_fields) <= set(inspect.signature(OnnxBackend).parameters)
    options = {f.name for f in dataclasses.fields(TritonOptions)}
    assert set(TritonSettings.model_fields) <= options

    settings = load_settings(
        triton={"url": "default:1", "request_timeout_s": 7.0, "keepalive_time_s": 3.0}
    )
    entry = {**ENTRY, "backend": "triton", "triton": {"model": "remote"}}
    built = loading._triton_backend(ModelConfig.model_validate(entry), settings).options
    assert (built.url, built.model, built.outputs) == ("default:1", "remote", ("y",))
    assert (built.request_timeout_s, built.keepalive_time_s) == (7.0, 3.0)
    assert built.connect_timeout_s == settings.triton.connect_timeout_s
    entry["triton"] = {"url": "other:2"}
    assert (
        loading._triton_backend(ModelConfig.model_validate(entry), settings).options.url
        == "other:2"
    )
