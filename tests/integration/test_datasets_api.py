"""DatasetService through a real server: list, delete, the audit log, the start-up sweep, the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from assay.client import AsyncClient, Client, FailedPreconditionError, NotFoundError
from assay.server.app import AssayServer, create_server
from assay.server.dataset_folders import STAGING, VERSIONS
from assay.server.store.records import JobState
from assay.v1 import datasets_pb2, datasets_pb2_grpc
from tests.conftest import SAMPLES, demo_settings


def local_dataset(folder: Path, count: int) -> Path:
    for sample in SAMPLES[:count]:
        target = folder / sample.name[0] / sample.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sample.read_bytes())
    return folder


async def test_list_delete_and_the_audit_log(job_server: AssayServer, tmp_path: Path) -> None:
    """On each store engine: dataset metadata and the audit log live in the store."""
    app = job_server
    assert app.uploads is not None
    store = app.uploads.store
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        path = await client.upload_dataset("two", local_dataset(tmp_path / "a", 4))
        await client.upload_dataset("one", local_dataset(tmp_path / "b", 3))
        listed = await client.list_datasets()
        assert [(d.name, d.files) for d in listed] == [("one", 3), ("two", 4)]
        assert listed[1].path == path and listed[1].uploaded_by.startswith("ipv4:127.0.0.1")
        assert listed[1].bytes == sum(p.stat().st_size for p in (tmp_path / "a").rglob("*.png"))

        job = store.create("robustness_suite", {"dataset": path + "/manifest.jsonl"}, 1)
        with pytest.raises(FailedPreconditionError, match=job.id):
            await client.delete_dataset("two")
        store.finish(job.id, JobState.CANCELLED)
        deleted = await client.delete_dataset("two")
        assert deleted.name == "two" and not os.path.lexists(path)
        assert [d.name for d in await client.list_datasets()] == ["one"]
        with pytest.raises(NotFoundError):
            await client.delete_dataset("two")

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = datasets_pb2_grpc.DatasetServiceStub(channel)
        header = datasets_pb2.DatasetHeader(name="bad")
        chunk = datasets_pb2.FileChunk(path="../x.png", data=b"x")
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.UploadDataset(
                iter(
                    [
                        datasets_pb2.UploadDatasetRequest(header=header),
                        datasets_pb2.UploadDatasetRequest(chunk=chunk),
                    ]
                )
            )
        page = await stub.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=1))
        assert [d.name for d in page.datasets] == ["one"] and not page.next_page_token

    actions = [(e.dataset, e.action) for e in reversed(store.upload_log())]
    assert actions == [
        ("two", "created"),
        ("one", "created"),
        ("two", "deleted"),
        ("bad", "failed"),
    ]
    (failure,) = store.upload_log("bad")
    assert "relative" in failure.detail and failure.actor.startswith("ipv4:")


async def test_the_server_sweeps_what_a_crash_left_at_start(tmp_path: Path) -> None:
    settings = demo_settings()
    uploads = settings.data.dir / "datasets"
    (uploads / STAGING / "0-dead").mkdir(parents=True)  # a staging folder whose owner died
    (uploads / STAGING / "0-dead" / "x.png").write_bytes(b"half")
    (uploads / "legacy" / "cat").mkdir(parents=True)  # written before versions existed
    (uploads / "legacy" / "cat" / "1.png").write_bytes(SAMPLES[0].read_bytes())
    server = await create_server(settings)
    await server.start()
    try:
        assert list((uploads / STAGING).iterdir()) == []
        assert (uploads / "legacy").is_symlink() and (uploads / VERSIONS / "legacy").is_dir()
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            (found,) = await client.list_datasets()
        assert (found.name, found.files, found.uploaded_by) == ("legacy", 1, "server")
    finally:
        await server.stop(0)


def test_cli_lists_and_deletes_datasets(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from assay.client._background import BackgroundServer
    from assay.client.cli import app as cli_app

    with BackgroundServer(demo_settings()) as server:
        target = f"127.0.0.1:{server.port}"
        with Client(target) as client:
            client.upload_dataset("digits-cli", local_dataset(tmp_path / "d", 5))
        listed = CliRunner().invoke(cli_app, ["datasets", "list", "--target", target])
        deleted = CliRunner().invoke(
            cli_app, ["datasets", "delete", "digits-cli", "--target", target]
        )
        missing = CliRunner().invoke(
            cli_app, ["datasets", "delete", "digits-cli", "--target", target]
        )
    assert listed.exit_code == 0, listed.output
    assert "digits-cli" in listed.output and "5" in listed.output
    assert deleted.exit_code == 0 and "deleted dataset digits-cli (5 files" in deleted.output
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
