"""Uploads against a real store of each engine: a commit cut short or unrecorded, pinned versions.

The uploads root is a real folder and the store a real SQLite file or
PostgreSQL schema. Two seams only time things: a gate that holds the
publish step, and a store whose ``put_dataset`` says UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from assay.server import dataset_catalog
from assay.server.dataset_catalog import UNRECORDED, UploadedDatasets
from assay.server.dataset_folders import STAGING, VERSIONS, Staged
from assay.server.errors import FailedPreconditionError, UnavailableError
from assay.server.robustness.specs import RobustnessSpec
from assay.server.store import Store
from assay.server.store.records import DatasetRecord, JobState, UploadEvent
from assay.server.uploads import DatasetUpload


async def staged_upload(datasets: UploadedDatasets, name: str, files: dict[str, bytes]) -> Any:
    upload = await datasets.begin(name, replace=True)
    for path, data in files.items():
        await upload.add(path, data)
    return upload


async def upload(datasets: UploadedDatasets, name: str, files: dict[str, bytes]) -> str:
    done = await datasets.commit(await staged_upload(datasets, name, files), "tester")
    return done.version


def actions(store: Store, name: str) -> list[str]:
    return [e.action for e in reversed(store.upload_log(name))]


async def test_a_commit_cancelled_mid_publish_still_lists_records_and_never_fails(
    store: Store, tmp_path: Path
) -> None:
    datasets = UploadedDatasets(tmp_path / "uploads", store, 1 << 20, settle_s=0)
    await datasets.start()
    entered, gate = threading.Event(), threading.Event()
    publish = datasets.folder.publish

    def held_publish(name: str, staged: Staged, replace: bool) -> str | None:
        entered.set()
        gate.wait(30)
        return publish(name, staged, replace)

    datasets.folder.publish = held_publish  # type: ignore[method-assign]
    job = await staged_upload(datasets, "d", {"cat/1.png": b"one", "cat/2.png": b"two"})
    call = asyncio.create_task(datasets.commit(job, "client"))
    await asyncio.to_thread(entered.wait, 30)
    call.cancel()  # the client went away while the link was being switched
    with pytest.raises(asyncio.CancelledError):
        await call
    failing = asyncio.create_task(datasets.fail("d", job, "client", "CancelledError"))
    await asyncio.sleep(0.05)
    assert not failing.done(), "fail waits for the commit under way"
    gate.set()
    await failing
    assert datasets.folder.current("d") == job.version
    record = store.dataset("d")
    assert record is not None and (record.version, record.files) == (job.version, 2)
    assert actions(store, "d") == ["created"], "no 'failed' entry for a visible dataset"
    assert [d.name for d in await datasets.all()] == ["d"]
    assert list((tmp_path / "uploads" / STAGING).iterdir()) == [], "lock released once"
    await datasets.aclose()


class WritesDown:
    """The real store, except that ``put_dataset`` answers UNAVAILABLE while ``down``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = True
        self.tries = 0

    def put_dataset(self, record: DatasetRecord, event: UploadEvent) -> None:
        self.tries += 1
        if self.down:
            raise UnavailableError("store unreachable")
        self.inner.put_dataset(record, event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_published_upload_the_store_cannot_record_is_listed_then_recorded(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_catalog, "RECORD_RETRY_S", 0.01)
    flaky = WritesDown(store)
    datasets = UploadedDatasets(tmp_path / "uploads", flaky, 1 << 20, settle_s=0)  # type: ignore[arg-type]
    await datasets.start()
    record = await datasets.commit(
        await staged_upload(datasets, "d", {"a/1.png": b"12345"}), "client"
    )
    assert flaky.tries == dataset_catalog.RECORD_TRIES and store.dataset("d") is None
    (listed,) = await datasets.all()
    assert (listed.name, listed.version, listed.files, listed.bytes) == ("d", record.version, 1, 5)
    assert listed.uploaded_by == UNRECORDED
    assert actions(store, "d") == [], "nothing says 'failed'"
    flaky.down = False
    await asyncio.to_thread(datasets.tidy)  # what the periodic tidy-up (or a start) does
    stored = store.dataset("d")
    assert stored is not None and (stored.version, stored.files) == (record.version, 1)
    assert actions(store, "d") == ["created"]
    await datasets.aclose()


async def test_pinned_versions_outlive_a_replace_until_their_job_ends(
    store: Store, tmp_path: Path
) -> None:
    datasets = UploadedDatasets(tmp_path / "uploads", store, 1 << 20, settle_s=0)
    await datasets.start()
    old = await upload(datasets, "d", {"a/1.png": b"old"})
    spec = datasets.pin(RobustnessSpec(model="m", dataset=str(datasets.folder.path("d"))))
    assert isinstance(spec, RobustnessSpec)
    assert spec.dataset == str(datasets.folder.root / VERSIONS / "d" / old)
    job = store.create("robustness_suite", spec.model_dump(mode="json"), 3)
    new = await upload(datasets, "d", {"a/1.png": b"new"})
    await datasets.aclose()  # waits for the prune the commit started
    versions = datasets.folder.root / VERSIONS / "d"
    assert sorted(p.name for p in versions.iterdir()) == [old, new], "the live job's version"
    with pytest.raises(FailedPreconditionError, match=job.id):
        await datasets.delete("d", "tester")  # a pinned version names the dataset too
    assert (Path(spec.dataset) / "a" / "1.png").read_bytes() == b"old"
    store.finish(job.id, JobState.SUCCEEDED)
    await asyncio.to_thread(datasets.tidy)
    assert sorted(p.name for p in versions.iterdir()) == [new]
    assert (await datasets.delete("d", "tester")).version == new


async def test_a_failed_upload_before_publish_is_discarded_and_logged(
    store: Store, tmp_path: Path
) -> None:
    datasets = UploadedDatasets(tmp_path / "uploads", store, 1 << 20, settle_s=0)
    await datasets.start()
    job: DatasetUpload = await staged_upload(datasets, "d", {})
    with pytest.raises(Exception, match="no files"):
        await datasets.commit(job, "client")
    await datasets.fail("d", job, "client", "InvalidArgumentError: the upload held no files")
    assert actions(store, "d") == ["failed"] and not datasets.folder.exists("d")
    assert list((tmp_path / "uploads" / STAGING).iterdir()) == []
    await datasets.aclose()
