"""Server settings: one pydantic-settings root, built once in main() and passed down.

Sources, highest priority first: keyword overrides, `ASSAY_*` environment
variables (nested with `__`, e.g. `ASSAY_GRPC__PORT=50052`), then an optional
YAML or TOML file. Nothing else in the server reads the environment (the
default data folder follows XDG_DATA_HOME, read here too).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from assay.server.errors import ConfigError
from assay.server.models.config import ModelConfig

_Positive = Annotated[int, Field(gt=0)]


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/assay, else ~/.local/share/assay: one per user, never a shared path."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path("~/.local/share").expanduser()
    return base / "assay"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GrpcSettings(_Section):
    """The gRPC listener."""

    host: str = "127.0.0.1"
    """Address to bind; use 0.0.0.0 or [::] inside a container."""
    port: Annotated[int, Field(ge=0, le=65535)] = 50051
    """0 picks a free port."""
    max_message_mb: Annotated[float, Field(gt=0, le=2047)] = 64.0
    """Largest request or response message, both directions."""
    grace_period_s: Annotated[float, Field(ge=0)] = 10.0
    """On SIGTERM/SIGINT, how long in-flight calls may finish."""
    keepalive_time_s: Annotated[float, Field(gt=0)] = 30.0
    keepalive_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    max_concurrent_rpcs: _Positive | None = None
    """Calls beyond this many are rejected with RESOURCE_EXHAUSTED; None = no cap."""


class BatchingSettings(_Section):
    """Defaults of every model's MicroBatcher (a model entry may override them)."""

    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    max_delay_ms: Annotated[float, Field(ge=0, le=10_000)] = 2.0
    """How long the first image of a batch waits for company."""
    max_queue: _Positive = 2048
    """Images waiting per model before requests get RESOURCE_EXHAUSTED."""
    max_inflight_batches: Annotated[int, Field(ge=1, le=64)] = 2
    """Batches a model runs at once; 2 overlaps collection with inference."""
    flush_when_idle: bool = True
    """Send a batch at once when the model has no batch running (no
    max_delay_ms wait at low load); False always waits max_delay_ms."""


class MetricsSettings(_Section):
    """The Prometheus /metrics endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464
    """0 picks a free port."""


class OnnxSettings(_Section):
    """onnxruntime sessions of the embedded backend."""

    intra_op_threads: Annotated[int, Field(ge=0)] = 0
    """Threads inside one operator; 0 lets onnxruntime choose (one per core)."""
    inter_op_threads: Annotated[int, Field(ge=0)] = 1
    session_workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Threads calling session.run concurrently per model."""
    allow_spinning: bool = False
    """Let idle onnxruntime threads spin; faster for back-to-back batches on
    dedicated cores, but steals CPU from request handling on small machines."""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    """Execution providers in order of preference; missing ones are skipped."""


class TritonSettings(_Section):
    """Connections to NVIDIA Triton for `backend: triton` models."""

    url: str = "127.0.0.1:8001"
    """Default gRPC endpoint; a model entry may name another."""
    max_message_mb: Annotated[float, Field(gt=0, le=2047)] = 256.0
    """Largest message to or from Triton (large batches of feature maps)."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Upper bound of one inference call; the caller's deadline is used when sooner."""
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    """Timeout of metadata calls while (re)connecting."""
    reconnect_initial_s: Annotated[float, Field(gt=0)] = 0.25
    reconnect_max_s: Annotated[float, Field(gt=0)] = 5.0
    """Reconnection backoff doubles from initial to max."""
    keepalive_time_s: Annotated[float, Field(gt=0)] = 10.0
    keepalive_timeout_s: Annotated[float, Field(gt=0)] = 5.0


class DataSettings(_Section):
    """Where evaluation data comes from and where state is kept."""

    roots: tuple[Path, ...] = ()
    """Folders datasets may be read from; any other path is PERMISSION_DENIED.
    Empty = the bundled demo data (deploy/samples) in a source checkout."""
    dir: Path = Field(default_factory=default_data_dir)
    """The server's data folder: uploaded datasets (datasets/, always a dataset
    root) and, unless `url` says otherwise, the SQLite store (assay.sqlite3).
    Default: $XDG_DATA_HOME/assay, else ~/.local/share/assay. Replicas share it
    on a ReadWriteMany volume so an upload through one is readable by all."""
    url: str | None = None
    """The store: sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DB
    (a password belongs in the PGPASSWORD environment or a Secret-mounted
    passfile, not here). None = sqlite:///<dir>/assay.sqlite3."""
    pool_max: Annotated[int, Field(ge=1, le=256)] = 8
    """Most PostgreSQL connections one server opens."""
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    """How long a store call waits for a connection before UNAVAILABLE."""
    profile_refresh_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    """How often a server checks the store for profiles another replica
    replaced; a cached profile is at most this stale."""
    max_upload_mb: Annotated[float, Field(gt=0)] = 1024.0
    """Largest dataset a client may upload."""


class JobSettings(_Section):
    """Background evaluation jobs."""

    workers: Annotated[int, Field(ge=1, le=64)] = 2
    """Processes generating corrupted images."""
    max_running: Annotated[int, Field(ge=1, le=64)] = 2
    """Jobs running at once; more wait as PENDING."""
    inline_max_images: Annotated[int, Field(ge=1, le=1024)] = 64
    """Largest ScoreRobustness batch (no job)."""
    lease_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """How long a replica's claim on a running job lasts without a heartbeat;
    after that another replica takes the job over."""
    heartbeat_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """How often the owner renews its leases; keep it well below lease_s."""
    takeover_poll_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    """How often a replica looks for jobs whose lease ran out."""
    retention_days: Annotated[float, Field(ge=0)] = 30.0
    """Ended jobs (with units and report) are deleted this long after they
    last changed; 0 keeps them forever."""
    unrunnable_after_s: Annotated[float, Field(ge=0)] = 3600.0
    """A job this replica cannot run (a kind or spec field only a newer
    version knows, as in a rolling update) is left for other replicas; it is
    failed, with the reason, only when no replica claimed it for this long."""
    max_pending: Annotated[int, Field(ge=1)] = 1000
    """Jobs waiting to run, over all replicas of a store; more are
    RESOURCE_EXHAUSTED."""

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> JobSettings:
        if self.heartbeat_s >= self.lease_s:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s}) must be below lease_s ({self.lease_s}), "
                "or leases run out between heartbeats"
            )
        return self


class ImageSettings(_Section):
    """Limits and workers of image decoding and preprocessing."""

    max_pixels: _Positive = 40_000_000
    """Images with more pixels are refused from their header, before decoding."""
    max_images_per_request: Annotated[int, Field(ge=1, le=100_000)] = 256
    preprocess_workers: Annotated[int, Field(ge=1, le=256)] = 4
    inline_max_pixels: Annotated[int, Field(ge=0)] = 4096
    """Requests whose raw/tensor inputs total at most this many pixels are
    preprocessed on the event loop: a thread hop costs more than the work."""


class AigenSettings(_Section):
    """AI-generated image detection (AigenService and the Predict "aigen" signal)."""

    default_detectors: tuple[str, ...] = ()
    """Detectors used when a request names none; empty = every registered
    aigen_detector."""
    max_flip_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """Share of re-encoded variants whose decision may differ from the
    original before the verdict becomes UNSURE (0 = any flip)."""
    max_images_per_request: Annotated[int, Field(ge=1, le=10_000)] = 64
    """DetectGenerated scores full-resolution images (and, with stability,
    six variants of each): a tighter cap than Predict's."""


class Settings(BaseSettings):
    """Root of all server settings."""

    model_config = SettingsConfigDict(
        env_prefix="ASSAY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    grpc: GrpcSettings = GrpcSettings()
    batching: BatchingSettings = BatchingSettings()
    metrics: MetricsSettings = MetricsSettings()
    onnx: OnnxSettings = OnnxSettings()
    triton: TritonSettings = TritonSettings()
    images: ImageSettings = ImageSettings()
    data: DataSettings = DataSettings()
    jobs: JobSettings = JobSettings()
    aigen: AigenSettings = AigenSettings()
    model_repository: Path | None = None
    """A folder of model directories, each with an assay.yaml manifest
    (Triton layout). Unset with no `models` = the bundled demo repository."""
    models: tuple[ModelConfig, ...] = ()
    """Registry entries declared inline; relative paths are resolved
    against the config file's folder."""
    log_level: str = "INFO"


class _FileSource(PydanticBaseSettingsSource):
    """Values from a YAML or TOML file, lowest priority."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) settings file into a dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = path.parent.resolve()
    models = data.get("models")
    if isinstance(models, list):
        data["models"] = [_anchor_paths(entry, base) for entry in models]
    repo = data.get("model_repository")
    if isinstance(repo, str) and not Path(repo).is_absolute():
        data["model_repository"] = str((base / repo).resolve())
    return data


def _anchor_paths(entry: Any, base: Path) -> Any:
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    for key in ("path", "labels_file", "torchscript"):
        value = entry.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            entry[key] = str((base / value).resolve())
    return entry


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, environment and an optional file.

    Raises:
        ConfigError: with every invalid field named, e.g.
            ``grpc.port: Input should be less than or equal to 65535``.
    """
    data = read_config_file(config_file) if config_file is not None else {}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _FileSource(settings_cls, data))

    try:
        return _Loaded(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, config_file)) from None


def describe_validation_error(exc: ValidationError, source: Path | None = None) -> str:
    """One line per invalid field: its dotted path and what is wrong."""
    where = f" in {source}" if source else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"]) or "(root)"
        lines.append(f"  {path}: {err['msg']}")
    return "\n".join(lines)
