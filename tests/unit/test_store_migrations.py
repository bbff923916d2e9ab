"""Schemas from empty and from the previous version on both engines, URLs, an unreachable server."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from assay.server.errors import ConfigError, FailedPreconditionError, UnavailableError
from assay.server.store import JobState, Store, open_store, postgres, sqlite
from assay.server.store.urls import parse, redact
from tests._postgres import PostgresServer
from tests._raw_sql import raw

TABLES = ("jobs", "units", "results", "profiles", "datasets", "uploads")


def columns(url: str, table: str) -> set[str]:
    if parse(url).path is not None:
        return {row[1] for row in raw(url, f"PRAGMA table_info({table})")}
    sql = (
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = current_schema()"
    )
    return {row[0] for row in raw(url, sql, (table,))}


def test_both_engines_build_the_same_tables_from_empty(tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    for url in (sqlite_url, postgres_url):
        open_store(url).close()
    for table in TABLES:
        pg_columns = columns(postgres_url, table) - ({"seq"} if table == "units" else set())
        assert columns(sqlite_url, table) == pg_columns, table
    assert "owner" in columns(postgres_url, "jobs") and "blob" in columns(sqlite_url, "profiles")
    assert raw(sqlite_url, "PRAGMA user_version") == [(sqlite.SCHEMA_VERSION,)] == [(3,)]
    applied = raw(postgres_url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert applied == [(m.version, m.name) for m in postgres.MIGRATIONS]
    assert len(applied) == postgres.SCHEMA_VERSION == 2


def test_postgres_from_the_previous_version_keeps_its_jobs(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        postgres.migrate(conn, 1)  # The jobs-only schema: no leases, profiles, datasets.
    assert "owner" not in columns(postgres_url, "jobs")
    raw(
        postgres_url,
        "INSERT INTO jobs VALUES ('old', 'robustness', 'running', '{\"m\": 1}', 1.0, 2.0, 1, 3, "
        "'corruptions', NULL, 1, NULL)",
    )
    raw(
        postgres_url,
        "INSERT INTO units (job_id, key, meta, arrays, created_at) VALUES "
        "('old', 'u0', '{}', ?, 1.5)",
        (b"",),
    )
    with contextlib.closing(open_store(postgres_url)) as store:
        [old] = store.claimable()
        assert (old.id, old.state, old.done, old.spec) == ("old", JobState.RUNNING, 1, {"m": 1})
        assert (old.owner, old.lease_until, old.attempts) == (None, None, 1)
        assert store.unit_keys("old") == {"u0"}
        claimed = store.claim("old", "replica-a", 30.0)
        assert claimed is not None and claimed.attempts == 2
        store.put_profile("ood", "m", "1", {}, b"blob")  # The new tables are there.
    assert [row[0] for row in raw(postgres_url, "SELECT version FROM schema_migrations")] == [1, 2]


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    opened: list[Store] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(4)

    def start() -> None:
        gate.wait(timeout=30)
        try:
            opened.append(open_store(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in opened:
        store.close()
    assert errors == [] and len(opened) == 4
    assert raw(postgres_url, "SELECT COUNT(*) FROM schema_migrations") == [(2,)]


def test_a_newer_postgres_schema_is_refused_untouched(postgres_url: str) -> None:
    open_store(postgres_url).close()
    raw(postgres_url, "INSERT INTO schema_migrations (version, name) VALUES (9, '0009_future.sql')")
    with pytest.raises(FailedPreconditionError, match="schema version 9, newer than version 2"):
        open_store(postgres_url)
    assert raw(postgres_url, "SELECT MAX(version) FROM schema_migrations") == [(9,)]


def test_a_newer_sqlite_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    with pytest.raises(FailedPreconditionError, match="schema version 4, newer than version 3"):
        open_store(f"sqlite:///{path}")
    assert raw(f"sqlite:///{path}", "PRAGMA user_version") == [(4,)]


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of the test's own, which the test may stop."""
    server = PostgresServer()
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError):  # already stopped by the test
            server.stop()


def test_a_stopped_server_is_unavailable_and_the_password_is_never_shown(
    own_server: PostgresServer,
) -> None:
    url = own_server.create_schema().replace("assay@", "assay:s3cret@")  # trust auth
    store = open_store(url, connect_timeout_s=2.0)
    try:
        assert store.url == url.replace("s3cret", "***")
        store.ping()
        job = store.create("k", {}, 1)
        own_server.stop()
        with pytest.raises(UnavailableError, match=r"assay:\*\*\*@127\.0\.0\.1") as failed:
            store.ping()
        assert "s3cret" not in str(failed.value)
        with pytest.raises(UnavailableError):
            store.get(job.id)
    finally:
        store.close()
    with pytest.raises(UnavailableError, match="cannot reach the PostgreSQL store") as refused:
        open_store(url, connect_timeout_s=2.0)
    assert "s3cret" not in str(refused.value)


def test_sqlite_ping_answers_until_closed(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    store.ping()
    store.close()
    with pytest.raises(UnavailableError, match="closed"):
        store.ping()


@pytest.mark.parametrize(
    ("url", "engine", "path"),
    [
        ("sqlite:///var/lib/assay/assay.sqlite3", "sqlite", Path("/var/lib/assay/assay.sqlite3")),
        ("sqlite:////tmp/x.db", "sqlite", Path("/tmp/x.db")),
        ("postgresql://assay@db:5432/assay", "postgresql", None),
        ("postgres://assay@db/assay?sslmode=require", "postgresql", None),
        ("postgresql:///assay?host=/run/postgresql", "postgresql", None),
    ],
)
def test_store_urls_parse(url: str, engine: str, path: Path | None) -> None:
    parsed = parse(url)
    assert (parsed.engine, parsed.path, parsed.raw) == (engine, path, url)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://relative/assay.sqlite3",
        "sqlite:relative.db",
        "sqlite:///var/x.db?mode=ro",
        "/var/lib/assay/assay.sqlite3",
        "mysql://root:hunter2@db/assay",
        "postgresql:",
        "",
    ],
)
def test_other_urls_are_config_errors_with_an_example(url: str) -> None:
    with pytest.raises(ConfigError, match=r"sqlite:///var/lib/assay/assay\.sqlite3") as refused:
        open_store(url)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss:w@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?sslmode=require&password=pw",
            "postgresql://u@h/db?sslmode=require&password=***",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///tmp/a.db", "sqlite:///tmp/a.db"),
    ],
)
def test_passwords_are_redacted(url: str, shown: str) -> None:
    assert redact(url) == shown
    if url.startswith("postgresql"):
        assert parse(url).redacted == shown


def test_a_postgres_url_without_psycopg_names_the_extra() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg"] = None  # as on an install without the postgres extra
        from assay.server.errors import ConfigError
        from assay.server.store import open_store
        try:
            open_store("postgresql://assay:pw@127.0.0.1:1/assay")
        except ConfigError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'assay[postgres]'" in done.stdout, done.stderr
    assert "assay:***@127.0.0.1:1" in done.stdout and ":pw@" not in done.stdout
