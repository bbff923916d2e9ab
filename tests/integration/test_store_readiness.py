"""Readiness follows the store: a real PostgreSQL stopped under a serving server, then started.

The server runs on its own PostgreSQL cluster (the session's is shared by other
tests, so it is never stopped), restarted on the same port as a database
comes back after an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assay.server.app import READINESS_POLL_S, SERVICES, AssayServer, create_server
from tests._postgres import PostgresMissingError, PostgresServer
from tests.conftest import demo_settings

CONNECT_TIMEOUT_S = 1.0
DEADLINE_S = READINESS_POLL_S + 2 * CONNECT_TIMEOUT_S + 10.0
"""A poll, a ping timing out, and slack for a loaded machine."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MODELS, JOBS = SERVICES[1], SERVICES[2]


class RestartablePostgres(PostgresServer):
    """The test cluster, with an outage: stop it, then start it again on the same port."""

    def _options(self) -> list[str]:
        data, log = str(self.dir / "data"), str(self.dir / "server.log")
        return ["-D", data, "-o", f"-k {self.dir} -h 127.0.0.1 -p {self.port} -F", "-l", log]

    halted = False

    def halt(self) -> None:
        """Stops the server as a crash would (no shutdown checkpoint)."""
        self._run("pg_ctl", *self._options(), "-m", "immediate", "-w", "stop")
        self.halted = True

    def resume(self) -> None:
        """Starts it again with the same address and data."""
        self._run("pg_ctl", *self._options(), "-w", "start")
        self.halted = False

    def stop(self) -> None:
        """Stops (unless halted) and removes the cluster."""
        if self.halted:
            self.resume()  # PostgresServer.stop stops a running server, then removes it
        super().stop()


@pytest.fixture
def postgres() -> Iterator[RestartablePostgres]:
    try:
        server = RestartablePostgres()
    except PostgresMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def app(postgres: RestartablePostgres) -> AsyncIterator[AssayServer]:
    url = await asyncio.to_thread(postgres.create_database)
    settings = demo_settings(data={"url": url, "connect_timeout_s": CONNECT_TIMEOUT_S})
    server = await create_server(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def wait_for(stub: health_pb2_grpc.HealthStub, wanted: int) -> float:
    """Seconds until the server ("") reports `wanted`; fails past DEADLINE_S."""
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE_S:
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        if answer.status == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    pytest.fail(f"health did not become {wanted} within {DEADLINE_S}s")


async def status(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(answer.status)


async def test_not_serving_while_postgres_is_down_and_serving_once_it_is_back(
    app: AssayServer, postgres: RestartablePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="assay.server.readiness")

    def store_up() -> float | None:
        return app.metrics.registry.get_sample_value("assay_store_up")

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await wait_for(stub, SERVING)
        assert store_up() == 1

        await asyncio.to_thread(postgres.halt)
        down_s = await wait_for(stub, NOT_SERVING)
        assert await status(stub, JOBS) == NOT_SERVING
        assert await status(stub, MODELS) == SERVING  # liveness: no restart for a DB outage
        assert store_up() == 0
        await asyncio.sleep(3 * READINESS_POLL_S)  # several failed polls...
        assert await status(stub, "") == NOT_SERVING
        unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1, unreachable  # ...logged once

        await asyncio.to_thread(postgres.resume)
        up_s = await wait_for(stub, SERVING)
        assert await status(stub, JOBS) == SERVING
        assert store_up() == 1
        assert [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    print(f"NOT_SERVING {down_s:.2f}s after the stop, SERVING {up_s:.2f}s after the start")
