"""Two real `assay serve` processes on one store: job leases between replicas.

* one SQLite file: a job started through A is never run by B while A lives,
  and a cancel through B stops A's run;
* one PostgreSQL database: a cancel through B stops A's run; after `kill -9`
  of A mid-job, B takes the job over once A's lease ran out, keeps A's units
  and finishes with the report an uninterrupted run gives;
* one PostgreSQL database and one shared data folder (the ReadWriteMany volume
  of a Kubernetes deployment): a profile fitted through A is used by Predict on
  B, and a dataset uploaded through A is evaluated through B.

Each server has its own ports (0) and data folder, and short leases (2 s,
heartbeat 0.5 s). Its log goes to a file the test reads. Waits poll with deadlines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import assay.client as sdk
from assay.server.store import open_store
from assay.server.store.records import JobRecord
from tests.conftest import ROOT

T = TypeVar("T")
SAMPLES = ROOT / "deploy" / "samples"
HELDOUT = SAMPLES / "digits_heldout"
LEASE_S, HEARTBEAT_S = 2.0, 0.5
SUITE: dict[str, Any] = {
    "corruptions": ["gaussian_noise", "contrast", "fog"],
    "severities": [1, 3],
    "sample_limit": 40,
}
"""The standard preset cut down: 11 units of 40 images, a few seconds of work."""
SLOW: dict[str, Any] = {"sample_limit": 450}
"""The whole standard preset on all 450 held-out digits, so it is still running when the test
acts (the tests cancel it). At 100 images it ended in about 4 s on a 2-core machine: sooner
than the two lease renewals the SQLite test waits for."""


def until(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 60) -> T:
    """``read()`` until ``done`` holds for its value; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still not there after {timeout_s}s: {value}"
        time.sleep(0.05)


class Replica:
    """One `assay serve` process on the shared store, logging to a file."""

    def __init__(
        self, name: str, tmp_path: Path, store_url: str, data_dir: Path | None = None
    ) -> None:
        self.name = name
        self.log = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            "ASSAY_GRPC__PORT": "0",
            "ASSAY_METRICS__PORT": "0",
            "ASSAY_DATA__DIR": str(data_dir or tmp_path / name),
            "ASSAY_DATA__URL": store_url,
            "ASSAY_DATA__ROOTS": json.dumps([str(SAMPLES)]),
            "ASSAY_JOBS__LEASE_S": str(LEASE_S),
            "ASSAY_JOBS__HEARTBEAT_S": str(HEARTBEAT_S),
            "ASSAY_JOBS__TAKEOVER_POLL_S": "0.5",
            "ASSAY_JOBS__WORKERS": "1",
        }
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "assay.client", "serve"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        self._port: int | None = None

    @property
    def target(self) -> str:
        """host:port, once the server says it listens."""
        if self._port is None:
            found = until(
                lambda: (
                    re.search(r"assay listening on [\d.]+:(\d+)", self.text())
                    or self.process.poll()
                ),
                bool,
                timeout_s=90,
            )
            assert isinstance(found, re.Match), f"{self.name} exited:\n{self.text()}"
            self._port = int(found.group(1))
        return f"127.0.0.1:{self._port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def claimed(self, job_id: str) -> bool:
        return f"job {job_id}: claimed by" in self.text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[..., tuple[Replica, Replica]]]:
    started: list[Replica] = []

    def start(store_url: str, data_dir: Path | None = None) -> tuple[Replica, Replica]:
        a = Replica("a", tmp_path, store_url, data_dir)
        b = Replica("b", tmp_path, store_url, data_dir)
        started.extend((a, b))
        assert a.target and b.target  # both listening
        return a, b

    try:
        yield start
    finally:
        for replica in started:
            replica.stop()


def read_job(store_url: str, job_id: str) -> Callable[[], JobRecord]:
    """What the shared store says about the job (owner and lease included)."""

    def read() -> JobRecord:
        store = open_store(store_url)
        try:
            return store.get(job_id)
        finally:
            store.close()

    return read


def without_timings(report: dict[str, Any]) -> dict[str, Any]:
    """The report minus per-unit wall times ("timing"), the only part that varies run to run."""
    assert set(report) >= {"timing", "corruptions", "clean"}
    return {key: value for key, value in report.items() if key != "timing"}


def cancel_through_b_stops_a(a: Replica, b: Replica, store_url: str) -> None:
    with sdk.Client(a.target) as through_a, sdk.Client(b.target) as through_b:
        job = through_a.start_evaluation("digits_cnn", str(HELDOUT), "standard", **SLOW)
        held = until(read_job(store_url, job.id), lambda r: r.done >= 1)
        assert held.owner is not None and a.claimed(job.id) and not b.claimed(job.id)
        cancelled_at = time.monotonic()
        assert through_b.cancel_job(job.id).state is sdk.JobState.CANCELLED
        until(a.text, lambda text: f"job {job.id}: cancelled through another replica" in text)
        assert time.monotonic() - cancelled_at < HEARTBEAT_S + 5  # a heartbeat, with slack
        done = through_b.get_job(job.id).done
        ended = through_a.get_job(job.id)
        assert (ended.state, ended.done, ended.attempts) == ("cancelled", done, 1)


def test_two_servers_on_one_sqlite_file_never_run_each_other_s_jobs(
    replicas: Callable[..., tuple[Replica, Replica]], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared' / 'assay.sqlite3'}"
    a, b = replicas(url)
    with sdk.Client(a.target) as through_a, sdk.Client(b.target) as through_b:
        job = through_a.start_evaluation("digits_cnn", str(HELDOUT), "standard", **SLOW)
        first = until(read_job(url, job.id), lambda r: r.done >= 1 and r.lease_until is not None)
        owner, lease = first.owner, first.lease_until or 0.0
        # A renews for two whole leases while B looks for claimable jobs every 0.5 s.
        later = until(read_job(url, job.id), lambda r: (r.lease_until or 0) > lease + 2 * LEASE_S)
        assert later.owner == owner and owner is not None and owner in a.text()
        seen_by_b = through_b.get_job(job.id)
        assert seen_by_b.attempts == 1 and seen_by_b.state is sdk.JobState.RUNNING
        assert a.claimed(job.id) and not b.claimed(job.id), b.text()
        through_b.cancel_job(job.id)
    cancel_through_b_stops_a(a, b, url)


def test_two_servers_on_postgresql_take_over_a_killed_replica_s_job(
    replicas: Callable[..., tuple[Replica, Replica]], postgres_url: str
) -> None:
    a, b = replicas(postgres_url)
    cancel_through_b_stops_a(a, b, postgres_url)
    store = open_store(postgres_url)
    try:
        with sdk.Client(a.target) as through_a:
            job = through_a.start_evaluation("digits_cnn", str(HELDOUT), "standard", **SUITE)
            for event in through_a.watch_job(job.id):
                if event.job.done >= 1:
                    break
        a.kill()
        killed_at = time.time()
        before = {key: unit.created_at for key, unit in store.units(job.id).items()}
        lease_until = store.get(job.id).lease_until or 0.0
        assert before and store.get(job.id).done < store.get(job.id).total, "killed mid-job"
        with sdk.Client(b.target) as through_b:
            until(lambda: through_b.get_job(job.id).attempts, lambda n: n == 2)
            taken_at = time.time()
            finished = through_b.get_job(job.id).wait(timeout_s=120)
            resumed = through_b.get_report(job.id)
            again = through_b.start_evaluation("digits_cnn", str(HELDOUT), "standard", **SUITE)
            uninterrupted = through_b.get_report(again.wait(timeout_s=120).id)
        after = store.units(job.id)
    finally:
        store.close()
    assert b.claimed(job.id) and taken_at >= lease_until
    print(f"takeover {taken_at - killed_at:.2f}s after kill -9 (lease_s {LEASE_S})")
    assert taken_at - killed_at < LEASE_S + 10
    assert finished.done == finished.total and finished.attempts == 2
    assert {key: after[key].created_at for key in before} == before, "A's units were kept"
    assert without_timings(resumed.raw) == without_timings(uninterrupted.raw)
    assert set(resumed["timing"]) == set(uninterrupted["timing"])


def test_two_servers_on_postgresql_share_profiles_and_uploaded_datasets(
    replicas: Callable[..., tuple[Replica, Replica]], postgres_url: str, tmp_path: Path
) -> None:
    a, b = replicas(postgres_url, tmp_path / "shared-volume")
    upload = tmp_path / "upload"
    for digit in ("3", "7"):
        (upload / digit).mkdir(parents=True)
        for image in sorted((HELDOUT / digit).glob("*.png"))[:6]:
            (upload / digit / image.name).write_bytes(image.read_bytes())
    probe = sorted((HELDOUT / "5").glob("*.png"))[:3]
    with sdk.Client(a.target) as through_a, sdk.Client(b.target) as through_b:
        with pytest.raises(sdk.FailedPreconditionError):
            through_b.predict("digits_cnn", probe, signals=["ood"])  # no profile anywhere yet
        through_a.fit_profile("digits_cnn", str(HELDOUT), sample_limit=120, seed=1).wait(120)
        on_a = through_a.predict("digits_cnn", probe, signals=["ood"])
        on_b = until(  # B's cache learns of the new profile within data.profile_refresh_s
            lambda: _predict_or_none(through_b, probe), lambda found: found is not None
        )
        assert on_b is not None
        assert [p.ood for p in on_b] == [p.ood for p in on_a] and on_b[0].ood

        path = through_a.upload_dataset("two-digits", upload)
        assert [d.name for d in through_b.list_datasets()] == ["two-digits"]
        job = through_b.start_evaluation(
            "digits_cnn", path, "quick", corruptions=["contrast"], severities=[1]
        )
        report = through_b.get_report(job.wait(timeout_s=120).id)
    assert b.claimed(job.id) and not a.claimed(job.id)
    assert (report["dataset"]["images"], report["dataset"]["classes"]) == (12, 2)


def _predict_or_none(client: sdk.Client, images: list[Path]) -> list[sdk.Prediction] | None:
    """Predict with the OOD signal; None while the server still has no profile."""
    try:
        return client.predict("digits_cnn", images, signals=["ood"])
    except sdk.FailedPreconditionError:
        return None
