"""ModelBackend over NVIDIA Triton's gRPC API (tritonclient.grpc.aio).

Shapes, dtypes, max batch size and labels come from Triton itself. The
backend keeps one channel per model entry; when Triton is unreachable it is
not ready (callers get UNAVAILABLE at once) and a background task reconnects
with exponential backoff, re-reading and re-validating the model each time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from assay.server.errors import (
    BackendError,
    ConfigError,
    DeadlineExceededError,
    UnavailableError,
)
from assay.server.models.backend import BackendMetadata, TensorInfo, batch_deadline

log = logging.getLogger(__name__)

TRITON_DTYPES: dict[str, np.dtype] = {
    "FP32": np.dtype(np.float32),
    "FP16": np.dtype(np.float16),
    "FP64": np.dtype(np.float64),
    "UINT8": np.dtype(np.uint8),
    "INT8": np.dtype(np.int8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
}
_TRITON_NAMES = {dtype: name for name, dtype in TRITON_DTYPES.items()}

Validator = Callable[[BackendMetadata, "TritonBackend"], Awaitable[None]]
"""Called with fresh metadata on every (re)connect; raises ConfigError to refuse it."""


@dataclass(frozen=True)
class TritonOptions:
    """Connection settings of one Triton-served model."""

    url: str
    model: str
    version: str = ""
    outputs: tuple[str, ...] = ()
    """Outputs to fetch; empty = every output Triton declares."""
    max_message_mb: float = 256.0
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 5.0
    health_interval_s: float = 1.0
    """While connected, how often Triton is asked whether the model is ready."""
    keepalive_time_s: float = 10.0
    keepalive_timeout_s: float = 5.0


def _status(exc: InferenceServerException) -> str:
    """'UNAVAILABLE', 'DEADLINE_EXCEEDED', ... from a tritonclient exception."""
    return str(exc.status() or "").rpartition(".")[2]


def parse_metadata(metadata: dict[str, Any], config: dict[str, Any], model: str) -> BackendMetadata:
    """BackendMetadata from Triton's model metadata and config (as_json)."""
    max_batch = int(config.get("max_batch_size", 0))

    def info(tensor: dict[str, Any]) -> TensorInfo:
        dtype = TRITON_DTYPES.get(tensor["datatype"])
        if dtype is None:
            raise ConfigError(
                f"Triton model {model!r}: tensor {tensor['name']!r} has "
                f"unsupported datatype {tensor['datatype']}"
            )
        dims = tuple(int(d) for d in tensor["shape"])
        return TensorInfo(tensor["name"], dtype, dims[1:] if max_batch > 0 else dims)

    return BackendMetadata(
        kind="triton",
        inputs=tuple(info(t) for t in metadata.get("inputs", [])),
        outputs=tuple(info(t) for t in metadata.get("outputs", [])),
        max_batch_size=max_batch if max_batch > 0 else 1,
    )


class TritonBackend:
    """Runs batches on a Triton-served model; reconnects by itself."""

    kind = "triton"

    def __init__(self, options: TritonOptions, validator: Validator | None = None) -> None:
        self.options = options
        self.validator = validator
        self._client: triton_aio.InferenceServerClient | None = None
        self._metadata = BackendMetadata(self.kind, (), (), None)
        self._batched = True
        self._fetch: tuple[str, ...] = ()
        self._connected = False
        self._problem: str | None = "not connected yet"
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def problem(self) -> str | None:
        """Why the model is not ready (None when it is)."""
        return self._problem

    def _new_client(self) -> triton_aio.InferenceServerClient:
        max_bytes = int(self.options.max_message_mb * 1024 * 1024)
        keepalive = triton_grpc.KeepAliveOptions(
            keepalive_time_ms=int(self.options.keepalive_time_s * 1000),
            keepalive_timeout_ms=int(self.options.keepalive_timeout_s * 1000),
            keepalive_permit_without_calls=True,
        )
        return triton_aio.InferenceServerClient(
            self.options.url,
            keepalive_options=keepalive,
            channel_args=[
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", int(self.options.reconnect_max_s * 1000)),
            ],
        )

    async def connect(self) -> bool:
        """Read and validate the model once; True when ready.

        Raises:
            ConfigError: Triton answered but the model does not match the entry.
        """
        if self._client is None:
            self._client = self._new_client()
        opts, timeout = self.options, self.options.connect_timeout_s
        try:
            if not await self._client.is_model_ready(
                opts.model, opts.version, client_timeout=timeout
            ):
                self._problem = f"Triton at {opts.url} has no ready model {opts.model!r}"
                return False
            metadata = await self._client.get_model_metadata(
                opts.model, opts.version, as_json=True, client_timeout=timeout
            )
            config = await self._client.get_model_config(
                opts.model, opts.version, as_json=True, client_timeout=timeout
            )
        except InferenceServerException as exc:
            self._problem = f"Triton at {opts.url} is unreachable: {exc.message()}"
            return False
        meta = parse_metadata(metadata, config.get("config", config), opts.model)
        self._batched = int(config.get("config", config).get("max_batch_size", 0)) > 0
        self._fetch = opts.outputs or tuple(o.name for o in meta.outputs)
        self._metadata = meta
        if self.validator is not None:
            await self.validator(meta, self)
        self._connected = True
        self._problem = None
        log.info("Triton model %r at %s is ready", opts.model, opts.url)
        return True

    def start(self) -> None:
        """Start the supervisor: health probes while connected, reconnects (backoff) after."""
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        delay = self.options.reconnect_initial_s
        while not self._closed:
            if self._connected:
                await asyncio.sleep(self.options.health_interval_s)
                await self._probe()
                delay = self.options.reconnect_initial_s
                continue
            try:
                if await self.connect():
                    continue
            except ConfigError as exc:
                self._problem = str(exc)
                log.error("%s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.reconnect_max_s)

    async def _probe(self) -> None:
        assert self._client is not None
        opts = self.options
        try:
            ready = await self._client.is_model_ready(
                opts.model, opts.version, client_timeout=opts.connect_timeout_s
            )
        except InferenceServerException as exc:
            self._lost(f"Triton at {opts.url} is unreachable: {exc.message()}")
            return
        if not ready:
            self._lost(f"Triton at {opts.url} reports model {opts.model!r} not ready")

    def _lost(self, reason: str) -> None:
        if self._connected:
            log.warning("lost Triton model %r: %s", self.options.model, reason)
        self._connected = False
        self._problem = reason

    async def fetch_labels(
        self, output: str, classes: int, input_info: TensorInfo
    ) -> tuple[str, ...]:
        """Class names through Triton's classification extension (one zero input).

        Returns () when the output has no label file.
        """
        assert self._client is not None
        shape = (1, *input_info.shape) if self._batched else input_info.shape
        tensor = triton_grpc.InferInput(
            input_info.name, list(shape), _TRITON_NAMES[input_info.dtype]
        )
        tensor.set_data_from_numpy(np.zeros(shape, input_info.dtype))
        requested = [triton_grpc.InferRequestedOutput(output, class_count=classes)]
        try:
            result = await self._client.infer(
                self.options.model,
                [tensor],
                self.options.version,
                outputs=requested,
                client_timeout=self.options.connect_timeout_s,
            )
        except InferenceServerException as exc:
            raise ConfigError(
                f"Triton model {self.options.model!r}: cannot read labels: {exc.message()}"
            ) from None
        entries = result.as_numpy(output).reshape(-1)
        labels = [""] * classes
        for entry in entries:
            _, index, *label = entry.decode().split(":", 2)
            labels[int(index)] = label[0] if label else ""
        return tuple(labels) if any(labels) else ()

    def _timeout_s(self) -> float:
        deadline = batch_deadline.get()
        timeout = self.options.request_timeout_s
        if deadline is not None:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise DeadlineExceededError("deadline passed before the Triton call")
            timeout = min(timeout, remaining)
        return timeout

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One Triton call for the whole batch (per row if the model has no batching)."""
        if not self._connected or self._client is None:
            raise UnavailableError(f"Triton model {self.options.model!r}: {self._problem}")
        if self._batched:
            return await self._call(inputs)
        rows = [
            await self._call({k: v[i] for k, v in inputs.items()})
            for i in range(len(next(iter(inputs.values()))))
        ]
        return {name: np.stack([row[name] for row in rows]) for name in rows[0]}

    async def _call(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._client is not None
        tensors = []
        for name, array in inputs.items():
            tensor = triton_grpc.InferInput(name, list(array.shape), _TRITON_NAMES[array.dtype])
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            tensors.append(tensor)
        requested = [triton_grpc.InferRequestedOutput(name) for name in self._fetch]
        try:
            result = await self._client.infer(
                self.options.model,
                tensors,
                self.options.version,
                outputs=requested,
                client_timeout=self._timeout_s(),
            )
        except InferenceServerException as exc:
            raise self._translate(exc) from None
        return {name: result.as_numpy(name) for name in self._fetch}

    def _translate(self, exc: InferenceServerException) -> Exception:
        status = _status(exc)
        if status == "UNAVAILABLE":
            self._lost(f"Triton at {self.options.url} is unavailable: {exc.message()}")
            return UnavailableError(
                f"Triton model {self.options.model!r} is unavailable; retry later"
            )
        if status == "DEADLINE_EXCEEDED":
            return DeadlineExceededError(
                f"Triton did not answer before the deadline ({exc.message()})"
            )
        if status == "NOT_FOUND":
            self._lost(f"Triton no longer serves {self.options.model!r}: {exc.message()}")
            return UnavailableError(
                f"Triton model {self.options.model!r} is not loaded; retry later"
            )
        return BackendError(f"Triton failed: {status} {exc.message()}")

    def metadata(self) -> BackendMetadata:
        """What Triton reported at the last successful connect (empty before)."""
        return self._metadata

    def ready(self) -> bool:
        """Connected and validated."""
        return self._connected and not self._closed

    async def aclose(self) -> None:
        """Stop the supervisor and close the channel."""
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
