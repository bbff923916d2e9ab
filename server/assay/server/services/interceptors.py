"""Server interceptors: domain errors -> status codes, and RPC metrics.

Both wrap the method handler once per method (cached), so a call pays for
one extra coroutine frame per interceptor and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from assay.server.errors import AssayError, ErrorCode
from assay.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

STATUS_CODES: dict[ErrorCode, grpc.StatusCode] = {
    code: grpc.StatusCode[code.name] for code in ErrorCode
}

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Streaming = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
Wrap = Callable[[Any, str, bool], Any]


def _rebuild(handler: grpc.RpcMethodHandler, wrap: Wrap, method: str) -> grpc.RpcMethodHandler:
    """Return a copy of handler whose behaviour is wrap(behaviour, method, streams)."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
    )
    for attr, factory, streams in kinds:
        behaviour = getattr(handler, attr)
        if behaviour is not None:
            return factory(
                wrap(behaviour, method, streams),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class _CachingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    def wrap(self, behaviour: Any, method: str, streams: bool) -> Any:
        """Return behaviour wrapped for this interceptor's concern."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = _rebuild(handler, self.wrap, method)
        self._cache[method] = wrapped
        return wrapped


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, AssayError):
        await context.abort(STATUS_CODES[exc.code], str(exc))
    log.error("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")


class ErrorMappingInterceptor(_CachingInterceptor):
    """AssayError -> its status code and message; anything else -> INTERNAL, logged."""

    def wrap(self, behaviour: Any, method: str, streams: bool) -> Any:
        """Turn exceptions raised by behaviour into status codes."""
        if streams:

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for item in behaviour(request, context):
                        yield item
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    await _abort_for(exc, context, method)

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behaviour(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort_for(exc, context, method)

        return unary


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def _final_code(context: grpc.aio.ServicerContext, failed: BaseException | None) -> grpc.StatusCode:
    """The status an RPC ended with, from its context or the exception that ended it."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(failed, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    if failed is not None and not isinstance(failed, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


class MetricsInterceptor(_CachingInterceptor):
    """go-grpc-prometheus RPC metrics: started, handled (by code), latency, messages."""

    def __init__(self, metrics: ServerMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def wrap(self, behaviour: Any, method: str, streams: bool) -> Any:
        """Count and time every call of behaviour, labelled by its method."""
        service, name = _split(method)
        m = self._metrics
        kind = "server_stream" if streams else "unary"
        labels = {"grpc_type": kind, "grpc_service": service, "grpc_method": name}
        started = m.rpc_started.labels(**labels)
        seconds = m.rpc_seconds.labels(**labels)
        received = m.msg_received.labels(**labels)
        sent = m.msg_sent.labels(**labels)
        handled = {
            code: m.rpc_handled.labels(**labels, grpc_code=code.name) for code in grpc.StatusCode
        }

        def finish(
            context: grpc.aio.ServicerContext, start: float, failed: BaseException | None
        ) -> None:
            handled[_final_code(context, failed)].inc()
            seconds.observe(time.perf_counter() - start)

        if streams:

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                start = time.perf_counter()
                started.inc()
                received.inc()
                failed: BaseException | None = None
                try:
                    async for item in behaviour(request, context):
                        sent.inc()
                        yield item
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    finish(context, start, failed)

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            started.inc()
            received.inc()
            failed: BaseException | None = None
            try:
                response = await behaviour(request, context)
                sent.inc()
                return response
            except BaseException as exc:
                failed = exc
                raise
            finally:
                finish(context, start, failed)

        return unary
