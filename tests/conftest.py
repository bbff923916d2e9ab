"""Shared fixtures: the committed demo model, a real grpc.aio server on port 0, a real
PostgreSQL server, stores of both engines, and the session-wide check that every report
the tests produce matches its shipped JSON Schema."""

from __future__ import annotations

import contextlib
import io
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from PIL import Image

from assay.server.app import AssayServer, create_server
from assay.server.settings import Settings, load_settings
from assay.server.store import Store, open_store
from tests._postgres import PostgresMissingError, PostgresServer, start_timed
from tests._report_capture import ReportCapture

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "deploy" / "triton" / "model_repository"
DIGITS_ONNX = REPOSITORY / "digits_cnn" / "1" / "model.onnx"
DIGITS_MANIFEST = yaml.safe_load((REPOSITORY / "digits_cnn" / "assay.yaml").read_text())
"""The committed registry entry: the one source of the demo model's preprocessing."""
SAMPLES = sorted((ROOT / "deploy" / "samples" / "digits").glob("*.png"))


TEST_DATA = Path(tempfile.mkdtemp(prefix="assay-tests-"))
"""Each server built by the tests gets its own data folder (job database) under here."""


def demo_settings(**overrides: Any) -> Settings:
    """Settings serving only the committed digits model, on free ports, with a fresh data dir."""
    base: dict[str, Any] = {
        "grpc": {"port": 0, "grace_period_s": 2.0},
        "metrics": {"port": 0},
        "data": {"dir": str(TEST_DATA / uuid.uuid4().hex)},
        "jobs": {"workers": 2},
        "model_repository": None,
        "models": [
            {
                "name": "digits_cnn",
                "path": str(DIGITS_ONNX),
                "labels_file": str(REPOSITORY / "digits_cnn" / "labels.txt"),
                "input": DIGITS_MANIFEST["input"],
                "outputs": DIGITS_MANIFEST["outputs"],
            }
        ],
        "onnx": {"intra_op_threads": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(**base)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def server() -> AsyncIterator[AssayServer]:
    app = await create_server(demo_settings())
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)


@pytest.fixture
async def channel(server: AssayServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (tests/_postgres.py).

    Fails, never skips, when PostgreSQL is not installed: `make postgresql` installs it.
    """
    try:
        server, took_s = start_timed()
    except PostgresMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    POSTGRES_START_S.append(took_s)
    try:
        yield server
    finally:
        server.stop()


POSTGRES_START_S: list[float] = []
"""How long the session's PostgreSQL server took to initdb and start (for the summary)."""


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty store location on the session's PostgreSQL server, dropped afterwards.

    A schema of its own (the URL's search_path), which isolates a test as a
    database would at a hundredth of the cost.
    """
    url = postgres_server.create_schema()
    try:
        yield url
    finally:
        postgres_server.drop(url)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty store of each engine (a test using it runs once per engine)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'store' / 'assay.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open store of each engine, closed afterwards."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


ENGINES = ("sqlite", "postgres")
"""The store engines the job/profile tier runs on (data.url unset, a PostgreSQL URL)."""


@contextlib.contextmanager
def engine_data(request: pytest.FixtureRequest, engine: str) -> Iterator[dict[str, str]]:
    """The ``data`` settings that put a server's store on ``engine``.

    SQLite: ``{}``, the default store (a file in the server's own data folder),
    so the tier keeps testing what a server uses unconfigured. PostgreSQL:
    ``{"url": ...}``, a fresh schema on the session's server, dropped afterwards.
    A context manager rather than a fixture so that module-scoped servers can
    use it too (the PostgreSQL server is session-wide).
    """
    if engine == "sqlite":
        yield {}
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    url = postgres.create_schema()
    try:
        yield {"url": url}
    finally:
        postgres.drop(url)


@pytest.fixture(params=ENGINES)
def server_store(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """``data`` settings for a server of each engine (a test using it runs once per engine).

    For the job/profile tier: tests that exercise the store through a real
    server (jobs, units, reports, profiles, datasets), not the whole suite.
    """
    with engine_data(request, request.param) as data:
        yield data


@pytest.fixture
async def job_server(server_store: dict[str, str]) -> AsyncIterator[AssayServer]:
    """The `server` fixture's server, once on each store engine."""
    app = await create_server(demo_settings(data=server_store))
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)


REPORTS = ReportCapture()
"""Every report of the session (see tests/_report_capture.py)."""


def _schema_failure(failures: list[str]) -> str:
    return "reports that do not match their shipped JSON Schema:\n" + "\n".join(failures)


@pytest.fixture(scope="session", autouse=True)
def _report_capture() -> Iterator[ReportCapture]:
    restore = REPORTS.install()
    try:
        yield REPORTS
    finally:
        restore()
    leftover = REPORTS.take_failures()
    if leftover:
        pytest.fail(_schema_failure(leftover))


@pytest.fixture(autouse=True)
def _reports_match_their_schemas(_report_capture: ReportCapture) -> Iterator[None]:
    """Fails (at teardown) the test during which a report that breaks its schema was written."""
    yield
    failures = _report_capture.take_failures()
    if failures:
        pytest.fail(_schema_failure(failures))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for took_s in POSTGRES_START_S:
        terminalreporter.write_line(f"postgresql test server: initdb + start took {took_s:.2f} s")
    for line in REPORTS.summary():
        terminalreporter.write_line(line)
