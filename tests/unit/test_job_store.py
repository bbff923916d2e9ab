"""The Store contract for jobs, run against both engines: real SQLite files and a real
PostgreSQL server (and a real killed process); then what is SQLite's own (file checks)."""

import contextlib
import io
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assay.server.errors import (
    ErrorCode,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from assay.server.store import JobRecord, JobState, SqliteStore, Store, default_url, open_store
from assay.server.store.postgres import PostgresStore
from assay.server.store.sqlite import MIGRATIONS
from assay.server.store.urls import parse
from tests._raw_sql import raw

_SCHEMA = MIGRATIONS[0].statements
OWNER = "replica-a"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs" / "jobs.db"  # Folders that do not exist yet.


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(db_path) as opened:
        yield opened


def start(store: Store, job_id: str) -> JobRecord:
    """Claims the job without holding a lease: what a run looked like before leases."""
    claimed = store.claim(job_id, OWNER, 0.0)
    assert claimed is not None
    return claimed


def scores(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n, dtype=np.float32)


def test_both_stores_satisfy_the_protocol(sqlite_store: SqliteStore, postgres_url: str) -> None:
    as_protocol: Store = sqlite_store  # mypy checks the structural matches.
    assert as_protocol is sqlite_store
    with PostgresStore(postgres_url) as postgres:
        as_protocol = postgres
        assert as_protocol is postgres


def test_lifecycle(store: Store, store_url: str) -> None:
    path = parse(store_url).path
    assert path is None or path.exists()
    spec = {"model": "resnet", "corruptions": ["gaussian_noise", "blur"], "severities": [1, 3]}
    job = store.create("robustness_suite", spec, total=3)
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    assert (job.state, job.done, job.total, job.attempts) == (JobState.PENDING, 0, 3, 0)
    assert job.spec == spec and job.stage == "" and job.error is None
    assert job.created_at == job.updated_at

    job = start(store, job.id)
    assert (job.state, job.attempts) == (JobState.RUNNING, 1)
    job = store.progress(job.id, 0, "warming up")
    assert job.stage == "warming up"

    for i in range(3):
        job = store.put_unit(job.id, f"unit-{i}", {"top1": 0.5 + i / 10}, {"scores": scores(8, i)})
        assert job.done == i + 1
    assert store.unit_keys(job.id) == {"unit-0", "unit-1", "unit-2"}
    units = store.units(job.id)
    assert list(units) == ["unit-0", "unit-1", "unit-2"]
    assert units["unit-2"].meta == {"top1": 0.7}
    np.testing.assert_array_equal(units["unit-1"].arrays["scores"], scores(8, 1))

    assert store.result(job.id) is None
    store.set_result(job.id, {"mean_top1": 0.6, "units": 3})
    job = store.finish(job.id, JobState.SUCCEEDED)
    assert job.state is JobState.SUCCEEDED and job.state.terminal
    assert job.updated_at >= job.created_at
    assert store.result(job.id) == {"mean_top1": 0.6, "units": 3}
    assert store.get(job.id) == job
    assert store.claimable() == []


def test_terminal_property() -> None:
    assert {s for s in JobState if s.terminal} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
    }
    assert JobState("running") is JobState.RUNNING


def test_start_again_counts_attempts(store: Store) -> None:
    job = store.create("ood_fit", {}, total=0)
    start(store, job.id)
    assert start(store, job.id).attempts == 2


def test_get_and_list_filters_and_order(store: Store) -> None:
    a = store.create("robustness_suite", {"n": 1}, 1)
    b = store.create("ood_fit", {"n": 2}, 1)
    c = store.create("robustness_suite", {"n": 3}, 1)
    start(store, b.id)
    store.finish(c.id, JobState.CANCELLED, "cancelled by request")

    assert [j.id for j in store.list()] == [c.id, b.id, a.id]
    assert [j.id for j in store.list(kind="robustness_suite")] == [c.id, a.id]
    assert [j.id for j in store.list(states=[JobState.RUNNING, JobState.PENDING])] == [b.id, a.id]
    assert [j.id for j in store.list(kind="ood_fit", states=[JobState.PENDING])] == []
    assert store.list(states=[]) == []
    assert [j.id for j in store.list(limit=2)] == [c.id, b.id]
    assert store.get(c.id).error == "cancelled by request"
    assert [j.id for j in store.claimable()] == [a.id, b.id]  # Oldest first.
    with pytest.raises(InvalidArgumentError):
        store.list(limit=0)


def test_put_unit_is_idempotent(store: Store) -> None:
    job = store.create("detector_eval", {}, total=2)
    start(store, job.id)
    store.put_unit(job.id, "a", {"v": 1}, {"x": np.arange(3)})
    store.put_unit(job.id, "b", {"v": 2}, {})
    job = store.put_unit(job.id, "a", {"v": 10}, {"x": np.arange(5)})
    assert job.done == 2
    units = store.units(job.id)
    assert units["a"].meta == {"v": 10}
    np.testing.assert_array_equal(units["a"].arrays["x"], np.arange(5))
    assert units["b"].arrays == {}


def test_arrays_round_trip_exactly(store: Store) -> None:
    arrays = {
        "f32": np.array([0.1, -0.0, np.nan, np.inf, -np.inf, 1e-45], dtype=np.float32),
        "i64": np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max]),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 4, 4),
        "scalar": np.array(3.5, dtype=np.float64),
        "empty": np.zeros((0,), dtype=np.float32),
        "empty_2d": np.zeros((3, 0), dtype=np.int64),
        "bool": np.array([True, False]),
        "big_endian": np.array([1.5, 2.5], dtype=">f4"),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "labels": np.array(["cat", "dog"]),
    }
    job = store.create("robustness_suite", {}, 1)
    store.put_unit(job.id, "u", {}, arrays)
    back = store.units(job.id)["u"].arrays
    assert back.keys() == arrays.keys()
    for name, original in arrays.items():
        restored = back[name]
        assert restored.dtype == original.dtype, name
        assert restored.shape == original.shape, name
        assert restored.tobytes(order="A") == original.tobytes(order="A"), name


def test_object_arrays_are_rejected(store: Store) -> None:
    job = store.create("robustness_suite", {}, 1)
    bad: dict[str, Any] = {"objs": np.array([{"a": 1}, None], dtype=object)}
    with pytest.raises(InvalidArgumentError, match="objs"):
        store.put_unit(job.id, "u", {}, bad)
    with pytest.raises(InvalidArgumentError):
        store.put_unit(job.id, "u", {}, {"ragged": [[1, 2], [3]]})
    assert store.unit_keys(job.id) == set() and store.get(job.id).done == 0


def test_a_pickled_blob_in_the_database_is_never_unpickled(store: Store, store_url: str) -> None:
    job = store.create("robustness_suite", {}, 1)
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([object()], dtype=object))  # Pickles the object.
    raw(
        store_url,
        "INSERT INTO units (job_id, key, meta, arrays, created_at) VALUES (?, 'u', '{}', ?, 0)",
        (job.id, buffer.getvalue()),
    )
    with pytest.raises(ValueError, match="allow_pickle"):
        store.units(job.id)


def test_json_must_be_strict(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="spec"):
        store.create("k", {"f": object()}, 1)
    job = store.create("k", {}, 1)
    with pytest.raises(InvalidArgumentError, match="result"):
        store.set_result(job.id, {"auroc": float("nan")})
    store.put_unit(job.id, "u", {"n": np.int64(7), "s": np.float32(0.5)}, {})
    assert store.units(job.id)["u"].meta == {"n": 7, "s": 0.5}


def test_unknown_id_is_not_found(store: Store) -> None:
    missing = "0" * 32
    calls: list[Callable[[], object]] = [
        lambda: store.get(missing),
        lambda: start(store, missing),
        lambda: store.progress(missing, 1, "x"),
        lambda: store.finish(missing, JobState.FAILED, "x"),
        lambda: store.put_unit(missing, "k", {}, {}),
        lambda: store.units(missing),
        lambda: store.unit_keys(missing),
        lambda: store.set_result(missing, {}),
        lambda: store.result(missing),
        lambda: store.delete(missing),
    ]
    for call in calls:
        with pytest.raises(NotFoundError, match=f"no job with id '{missing}'"):
            call()


def test_terminal_state_is_final(store: Store) -> None:
    job = store.create("k", {}, 1)
    with pytest.raises(InvalidArgumentError, match="terminal"):
        store.finish(job.id, JobState.RUNNING)
    store.finish(job.id, JobState.FAILED, "boom")
    changes: list[Callable[[], object]] = [
        lambda: store.finish(job.id, JobState.SUCCEEDED),
        lambda: store.finish(job.id, JobState.FAILED, "again"),
        lambda: store.progress(job.id, 1, "x"),
        lambda: store.put_unit(job.id, "k", {}, {}),
        lambda: store.set_result(job.id, {}),
    ]
    for change in changes:
        with pytest.raises(FailedPreconditionError, match="is failed"):
            change()
    assert store.claim(job.id, OWNER, 60.0) is None  # An ended job is never claimed.
    after = store.get(job.id)
    assert (after.state, after.error, after.done) == (JobState.FAILED, "boom", 0)


def test_delete_cascades(store: Store, store_url: str) -> None:
    job = store.create("k", {}, 1)
    store.put_unit(job.id, "u", {}, {"x": np.ones(2)})
    store.set_result(job.id, {"ok": True})
    store.delete(job.id)
    with pytest.raises(NotFoundError):
        store.get(job.id)
    assert raw(store_url, "SELECT COUNT(*) FROM units") == [(0,)]
    assert raw(store_url, "SELECT COUNT(*) FROM results") == [(0,)]


def test_wal_mode_and_schema_version(sqlite_store: SqliteStore, db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (3,)
    finally:
        raw.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 4")
    raw.close()
    with pytest.raises(FailedPreconditionError, match="schema version 4, newer than version 3"):
        SqliteStore(path)
    raw = sqlite3.connect(path)  # Refused without being touched.
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        raw.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(FailedPreconditionError, match="cannot open store database"):
        SqliteStore(path)


def test_closed_store_refuses_calls(store_url: str) -> None:
    store = open_store(store_url)
    store.close()
    store.close()
    with pytest.raises(FailedPreconditionError, match="closed"):
        store.list()


def test_second_instance_sees_writes(store: Store, store_url: str) -> None:
    other = open_store(store_url)
    try:
        job = store.create("k", {"a": 1}, 2)
        assert other.get(job.id) == job
        start(other, job.id)
        other.put_unit(job.id, "from-other", {}, {"x": np.arange(4)})
        assert store.get(job.id).done == 1
        assert store.unit_keys(job.id) == {"from-other"}
    finally:
        other.close()


def test_threads_lose_no_units(store: Store) -> None:
    job = store.create("robustness_suite", {}, total=4 * 25 + 1)
    start(store, job.id)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(25):
                store.put_unit(
                    job.id, f"t{t}-{i}", {"t": t, "i": i}, {"s": scores(16, t * 100 + i)}
                )
                store.put_unit(job.id, "shared", {"t": t}, {})  # Same key from every thread.
                store.get(job.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    units = store.units(job.id)
    assert len(units) == 101 and store.get(job.id).done == 101
    np.testing.assert_array_equal(units["t3-24"].arrays["s"], scores(16, 324))


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from assay.server.store import open_store

    store = open_store(sys.argv[1])
    job = store.create("robustness_suite", {"model": "m"}, total=10)
    store.claim(job.id, "killed-replica", 0.0)
    store.progress(job.id, 0, "corruptions")
    for i in range(5):
        store.put_unit(job.id, f"unit-{i}", {"i": i}, {"scores": np.full(4, i, np.float32)})
    print(job.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_crash_keeps_finished_units(store_url: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, store_url], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    job_id = child.stdout.strip()
    db_path = parse(store_url).path
    if db_path is not None:  # Killed before any checkpoint or clean close.
        assert Path(f"{db_path}-wal").exists()

    with contextlib.closing(open_store(store_url)) as store:
        [job] = store.claimable()
        assert isinstance(job, JobRecord)
        assert (job.id, job.state, job.done, job.total) == (job_id, JobState.RUNNING, 5, 10)
        assert (job.stage, job.attempts, job.spec) == ("corruptions", 1, {"model": "m"})
        units = store.units(job_id)
        assert sorted(units) == [f"unit-{i}" for i in range(5)]
        for i in range(5):
            np.testing.assert_array_equal(units[f"unit-{i}"].arrays["scores"], np.full(4, i))
        assert start(store, job_id).attempts == 2  # The resume is counted.


def test_a_failed_job_keeps_its_error_code(store: Store) -> None:
    job = store.create("robustness", {}, 1)
    failed = store.finish(job.id, JobState.FAILED, "no such label", ErrorCode.INVALID_ARGUMENT)
    assert (failed.error, failed.error_code) == ("no such label", ErrorCode.INVALID_ARGUMENT)
    assert store.get(job.id).error_code is ErrorCode.INVALID_ARGUMENT
    other = store.create("robustness", {}, 1)
    with pytest.raises(InvalidArgumentError, match="only a FAILED job carries an error code"):
        store.finish(other.id, JobState.CANCELLED, "stop", ErrorCode.INTERNAL)
    assert store.finish(other.id, JobState.CANCELLED, "stop").error_code is None


def test_a_version_1_database_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    raw = sqlite3.connect(path)
    for statement in _SCHEMA:  # The schema as version 1 wrote it, with one failed job.
        raw.execute(statement)
    raw.execute(
        "INSERT INTO jobs (id, kind, state, spec, created_at, updated_at, done, total, stage, "
        "error, attempts) VALUES ('old', 'robustness', 'failed', '{}', 1.0, 2.0, 0, 3, '', "
        "'boom', 1)"
    )
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with SqliteStore(path) as migrated:
        old = migrated.get("old")
        assert (old.state, old.error, old.error_code) == (JobState.FAILED, "boom", None)
        new = migrated.create("robustness", {}, 1)
        assert migrated.finish(new.id, JobState.FAILED, "x", ErrorCode.INTERNAL).error_code is (
            ErrorCode.INTERNAL
        )
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (3,)
    finally:
        raw.close()


def test_list_pages_by_created_at_then_id_without_gaps(store: Store) -> None:
    jobs = [store.create("robustness" if i % 2 else "ood", {}, 1) for i in range(7)]
    newest_first = sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)
    pages: list[list[str]] = []
    before = None
    while True:
        page = store.list(limit=3, before=before)
        if not page:
            break
        pages.append([j.id for j in page])
        before = (page[-1].created_at, page[-1].id)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [item for page in pages for item in page] == [j.id for j in newest_first]
    odd = store.list(
        kind="robustness", limit=10, before=(newest_first[2].created_at, newest_first[2].id)
    )
    assert [j.id for j in odd] == [j.id for j in newest_first[3:] if j.kind == "robustness"]


def test_a_version_2_database_upgrades_in_place_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    raw = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:  # What the last server before leases wrote.
        for statement in migration.statements:
            raw.execute(statement)
    raw.execute(
        "INSERT INTO jobs VALUES ('old', 'robustness', 'running', '{\"m\": 1}', 1.0, 2.0, 1, 3, "
        "'corruptions', NULL, 1, NULL)"
    )
    raw.execute("INSERT INTO units VALUES ('old', 'u0', '{}', ?, 1.5)", (b"",))
    raw.execute("PRAGMA user_version = 2")
    raw.commit()
    raw.close()
    with SqliteStore(path) as upgraded:
        [old] = upgraded.claimable()
        assert (old.id, old.state, old.done, old.spec) == ("old", JobState.RUNNING, 1, {"m": 1})
        assert (old.owner, old.lease_until) == (None, None)
        assert upgraded.unit_keys("old") == {"u0"}
        claimed = upgraded.claim("old", OWNER, 30.0)
        assert claimed is not None and claimed.attempts == 2
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (3,)
    finally:
        raw.close()


def test_the_default_store_adopts_a_legacy_jobs_file_in_place(tmp_path: Path) -> None:
    assert default_url(tmp_path) == f"sqlite:///{tmp_path / 'assay.sqlite3'}"
    with SqliteStore(tmp_path / "jobs.sqlite3") as legacy:
        job = legacy.create("robustness", {}, 1)
    assert default_url(tmp_path) == f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    opened = open_store(default_url(tmp_path))
    try:
        assert opened.get(job.id).id == job.id
    finally:
        opened.close()
    (tmp_path / "assay.sqlite3").touch()  # Once the new file exists, it wins.
    assert default_url(tmp_path) == f"sqlite:///{tmp_path / 'assay.sqlite3'}"
