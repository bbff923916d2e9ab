"""A job keeps the dataset version it started on across a replace and a restart (both engines).

Real servers, real files, a real store: a job pins the version its uploaded
dataset shows at Start; the server stops mid-job; the dataset is replaced
(by the server's own upload code, on the same folder and store); a second
server resumes the job. The report must come from the old version, which
survives the replace while the job lives and is removed after it ends.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from assay.client import AsyncClient
from assay.server.app import create_server
from assay.server.dataset_catalog import UploadedDatasets
from assay.server.dataset_folders import VERSIONS
from assay.server.errors import FailedPreconditionError
from assay.server.settings import Settings
from assay.server.store import default_url, open_store
from assay.server.store.records import JobRecord, JobState
from tests.conftest import ROOT, SAMPLES, demo_settings

HELDOUT = ROOT / "deploy" / "samples" / "digits_heldout"
OLD_IMAGES = 100
"""Version 1: enough images for the "standard" suite to be stopped mid-job."""


def local_dataset(folder: Path, images: list[Path]) -> Path:
    for image in images:
        target = folder / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.read_bytes())
    return folder


def heldout(count: int) -> list[Path]:
    per_class = count // 10
    return [p for d in sorted(HELDOUT.iterdir()) for p in sorted(d.glob("*.png"))[:per_class]]


async def replace_while_no_server_runs(settings: Settings, folder: Path) -> str:
    """Replace "digits" with the server's upload code; its prune runs at once (settle_s=0)."""
    store = await asyncio.to_thread(open_store, settings.data.url or default_url(settings.data.dir))
    datasets = UploadedDatasets(settings.data.dir / "datasets", store, 1 << 30, settle_s=0)
    try:
        upload = await datasets.begin("digits", replace=True)
        for path in sorted(folder.rglob("*.png")):
            await upload.add(path.relative_to(folder).as_posix(), path.read_bytes())
        record = await datasets.commit(upload, "test")
        await datasets.aclose()  # the prune the commit started has run
        with pytest.raises(FailedPreconditionError):  # the paused job names it (pinned)
            await datasets.delete("digits", "test")
        return record.version
    finally:
        store.close()


async def test_a_resumed_job_reads_the_version_it_pinned_and_that_version_goes_after(
    server_store: dict[str, str], tmp_path: Path
) -> None:
    settings = demo_settings(data=server_store)
    uploads = settings.data.dir / "datasets"
    first = await create_server(settings)
    await first.start()
    try:
        async with AsyncClient(f"127.0.0.1:{first.port}") as client:
            path = await client.upload_dataset(
                "digits", local_dataset(tmp_path / "v1", heldout(OLD_IMAGES))
            )
            old = Path(path).resolve().name
            job = await client.start_evaluation("digits_cnn", path, "standard")
            deadline = time.monotonic() + 120
            while (await client.get_job(job.id)).done < 1:
                assert time.monotonic() < deadline, "the job never finished a unit"
                await asyncio.sleep(0.05)
    finally:
        await first.stop(0)  # the job stays RUNNING, its lease released
    pinned = str(uploads / VERSIONS / "digits" / old)
    record = await asyncio.to_thread(_job, settings, job.id)
    assert record.spec["dataset"] == pinned, "the stored spec names the version, not the link"
    assert record.state is JobState.RUNNING and record.done < record.total, "stopped mid-job"

    new = await replace_while_no_server_runs(settings, local_dataset(tmp_path / "v2", SAMPLES))
    assert new != old and (uploads / "digits").resolve().name == new
    assert (uploads / VERSIONS / "digits" / old).is_dir(), "kept: a live job pinned it"

    second = await create_server(settings)
    await second.start()  # takes the job over; its start-up sweep keeps the pinned version too
    try:
        async with AsyncClient(f"127.0.0.1:{second.port}") as client:
            done = await (await client.get_job(job.id)).wait(timeout_s=300)
            assert done.attempts == 2, done
            report = await client.get_report(job.id)
            assert report["dataset"]["images"] == OLD_IMAGES, "every unit read the old version"
            assert Path(report["dataset"]["source"]) == Path(pinned).resolve()
            assert (uploads / VERSIONS / "digits" / old).is_dir()
            await client.upload_dataset("other", local_dataset(tmp_path / "o", SAMPLES[:2]))
            deadline = time.monotonic() + 60  # the next upload's prune, once the switch settled
            while (uploads / VERSIONS / "digits" / old).exists():
                assert time.monotonic() < deadline, "the old version outlived its last job"
                await asyncio.sleep(0.1)
            assert sorted(p.name for p in (uploads / VERSIONS / "digits").iterdir()) == [new]
            listed = {d.name: d.version for d in await client.list_datasets()}
            assert listed["digits"] == new
    finally:
        await second.stop(0)


def _job(settings: Settings, job_id: str) -> JobRecord:
    store = open_store(settings.data.url or default_url(settings.data.dir))
    try:
        record = store.get(job_id)
    finally:
        store.close()
    assert record is not None
    return record
