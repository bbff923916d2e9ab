"""The v1 contract over real grpc.aio servers: pagination, failed-job Status, Timestamps.

ListJobs is exercised on a JobService over a real store of each engine (SQLite,
PostgreSQL) whose job kinds finish (or fail) at once, so that many jobs and both
failure codes are cheap; the other List RPCs and a failing fit run on the full
demo server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from assay.client import AsyncClient
from assay.client._jobs import job as to_job
from assay.server.app import AssayServer, create_server
from assay.server.errors import InvalidArgumentError
from assay.server.jobs.manager import JobContext, JobManager
from assay.server.jobs.specs import JobSpec
from assay.server.services.interceptors import ErrorMappingInterceptor
from assay.server.services.jobs import JobServicer
from assay.server.settings import JobSettings
from assay.server.store import open_store
from assay.v1 import (
    aigen_pb2,
    aigen_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    ood_pb2,
    ood_pb2_grpc,
)
from tests.conftest import demo_settings


class _NoFields(JobSpec):
    """A spec with nothing in it: these toy kinds need no input."""


class _Finishes:
    spec_type = _NoFields

    def prepare(self, spec: _NoFields) -> int:
        return 1

    async def run(self, context: JobContext[_NoFields]) -> dict[str, Any]:
        return {"toy": True}  # no schema: a toy kind, not validated


class _RefusesItsInput(_Finishes):
    async def run(self, context: JobContext[_NoFields]) -> dict[str, Any]:
        raise InvalidArgumentError("label 'x' is not one of the model's labels")


class _Crashes(_Finishes):
    async def run(self, context: JobContext[_NoFields]) -> dict[str, Any]:
        raise RuntimeError("disk on fire")


@pytest.fixture
async def jobs_server(
    store_url: str,
) -> AsyncIterator[tuple[JobManager, jobs_pb2_grpc.JobServiceStub]]:
    store = open_store(store_url)
    kinds = {"ok": _Finishes(), "refused": _RefusesItsInput(), "crash": _Crashes()}
    manager = JobManager(store, kinds, JobSettings(max_running=4))
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(manager), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield manager, jobs_pb2_grpc.JobServiceStub(channel)
    finally:
        await server.stop(0)
        await manager.aclose()
        store.close()


async def _finished(manager: JobManager, kind: str) -> str:
    record = await manager.start(kind, {})
    async for event in manager.watch(record.id):
        if event.record.state.terminal:
            break
    return record.id


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def test_list_jobs_walks_pages_newest_first_without_gaps(jobs_server: Any) -> None:
    manager, stub = jobs_server
    ids = [await _finished(manager, "ok" if i % 3 else "refused") for i in range(11)]
    newest_first = [r.id for r in manager.store.list(limit=100)]
    assert sorted(newest_first) == sorted(ids)
    seen, token, sizes = [], "", []
    while True:
        page = await stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=4, page_token=token))
        sizes.append(len(page.jobs))
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert sizes == [4, 4, 3] and seen == newest_first
    # A job created while paging is newer than every token: it never shifts later pages.
    first = await stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=4))
    await _finished(manager, "ok")
    second = await stub.ListJobs(
        jobs_pb2.ListJobsRequest(page_size=4, page_token=first.next_page_token)
    )
    assert [j.id for j in second.jobs] == newest_first[4:8]
    # The filter travels with the token: the same filter continues, another is refused.
    failed = jobs_pb2.JOB_STATE_FAILED
    page = await stub.ListJobs(jobs_pb2.ListJobsRequest(states=[failed], page_size=2))
    rest = await stub.ListJobs(
        jobs_pb2.ListJobsRequest(states=[failed], page_size=2, page_token=page.next_page_token)
    )
    refused = [i for i in newest_first if manager.store.get(i).kind == "refused"]
    assert [j.id for j in [*page.jobs, *rest.jobs]] == refused and not rest.next_page_token
    for other in (
        jobs_pb2.ListJobsRequest(page_token=page.next_page_token),
        jobs_pb2.ListJobsRequest(kind="ok", states=[failed], page_token=page.next_page_token),
        jobs_pb2.ListJobsRequest(
            states=[jobs_pb2.JOB_STATE_SUCCEEDED], page_token=page.next_page_token
        ),
    ):
        assert await _code(stub.ListJobs(other)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_jobs_page_size_limits_and_bad_tokens(jobs_server: Any) -> None:
    manager, stub = jobs_server
    for _ in range(3):
        await _finished(manager, "ok")
    assert len((await stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=0))).jobs) == 3
    capped = await stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=10**9))
    assert len(capped.jobs) == 3 and not capped.next_page_token
    assert (
        await _code(stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=-1)))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    for token in ("not-a-token", "e30", "W10", "eyJhZnRlciI6WyJ4IiwxXSwiZmlsdGVyIjoiIn0"):
        request = jobs_pb2.ListJobsRequest(page_token=token)
        assert await _code(stub.ListJobs(request)) == grpc.StatusCode.INVALID_ARGUMENT, token


async def test_more_jobs_than_the_default_page_are_paged(jobs_server: Any) -> None:
    manager, stub = jobs_server
    for _ in range(101):
        manager.store.create("ok", {}, 1)  # PENDING rows are enough to list
    first = await stub.ListJobs(jobs_pb2.ListJobsRequest())
    assert len(first.jobs) == 100 and first.next_page_token
    last = await stub.ListJobs(jobs_pb2.ListJobsRequest(page_token=first.next_page_token))
    assert len(last.jobs) == 1 and not last.next_page_token


async def test_failed_jobs_carry_a_status_whose_code_tells_the_cause(jobs_server: Any) -> None:
    manager, stub = jobs_server
    before = time.time()
    refused = await stub.GetJob(jobs_pb2.GetJobRequest(id=await _finished(manager, "refused")))
    crashed = await stub.GetJob(jobs_pb2.GetJobRequest(id=await _finished(manager, "crash")))
    done = await stub.GetJob(jobs_pb2.GetJobRequest(id=await _finished(manager, "ok")))
    assert refused.state == crashed.state == jobs_pb2.JOB_STATE_FAILED
    assert refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert refused.error.message == "label 'x' is not one of the model's labels"
    assert crashed.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert (
        crashed.error.message
        == f"internal error in job {crashed.id}; the server log has the details"
    )
    assert "fire" not in crashed.error.message  # exception text stays in the server log
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED and not done.HasField("error")
    pending = manager.store.create("ok", {}, 1)
    cancelled = await stub.CancelJob(jobs_pb2.CancelJobRequest(id=pending.id))
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert cancelled.error.message == "cancelled by request"
    for job in (refused, crashed, done):
        created, updated = job.created_at.ToNanoseconds(), job.updated_at.ToNanoseconds()
        assert before * 1e9 - 1e6 <= created <= updated <= time.time() * 1e9 + 1e6
        record = manager.store.get(job.id)  # nanosecond split of the stored float
        assert abs(job.created_at.seconds + job.created_at.nanos / 1e9 - record.created_at) < 1e-6


async def test_the_sdk_reads_the_code_and_times(jobs_server: Any) -> None:
    manager, stub = jobs_server
    job_id = await _finished(manager, "refused")
    message = await stub.GetJob(jobs_pb2.GetJobRequest(id=job_id))
    sdk_job = to_job(message)
    record = manager.store.get(job_id)
    assert (sdk_job.error_code, sdk_job.error) == ("INVALID_ARGUMENT", record.error)
    assert sdk_job.created_at == pytest.approx(record.created_at, abs=1e-6)
    ok = await stub.GetJob(jobs_pb2.GetJobRequest(id=await _finished(manager, "ok")))
    assert to_job(ok).error_code == ""


async def test_delete_job_removes_an_ended_job_and_refuses_a_live_one(jobs_server: Any) -> None:
    manager, stub = jobs_server
    ended = await _finished(manager, "ok")
    live = manager.store.create("ok", {}, 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.DeleteJob(jobs_pb2.DeleteJobRequest(id=live.id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cancel it first" in (info.value.details() or "")
    deleted = await stub.DeleteJob(jobs_pb2.DeleteJobRequest(id=ended))
    assert (deleted.id, deleted.state) == (ended, jobs_pb2.JOB_STATE_SUCCEEDED)
    for call in (stub.GetJob(jobs_pb2.GetJobRequest(id=ended)),
                 stub.GetReport(jobs_pb2.GetReportRequest(id=ended)),
                 stub.DeleteJob(jobs_pb2.DeleteJobRequest(id=ended))):  # fmt: skip
        assert await _code(call) == grpc.StatusCode.NOT_FOUND
    empty = stub.DeleteJob(jobs_pb2.DeleteJobRequest(id=""))
    assert await _code(empty) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[AssayServer]:
    server = await create_server(demo_settings(data={"roots": [str(tmp_path)]}))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def test_a_fit_on_undecodable_images_fails_with_invalid_argument(
    app: AssayServer, tmp_path: Path
) -> None:
    folder = tmp_path / "broken" / "3"
    folder.mkdir(parents=True)
    for i in range(4):
        (folder / f"{i}.png").write_bytes(b"not a png at all")
    async with AsyncClient(f"127.0.0.1:{app.port}") as client:
        job = await client.fit_profile("digits_cnn", str(tmp_path / "broken"))
        async for event in client.watch_job(job.id):
            last = event.job
        assert last.state == "failed" and last.error_code == "INVALID_ARGUMENT", last


async def test_list_models_and_profiles_page_and_check_their_filters(app: AssayServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        models = models_pb2_grpc.ModelServiceStub(channel)
        one = await models.ListModels(models_pb2.ListModelsRequest(page_size=1))
        assert [m.name for m in one.models] == ["digits_cnn"] and not one.next_page_token
        assert (
            await _code(models.ListModels(models_pb2.ListModelsRequest(page_size=-5)))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        ood = ood_pb2_grpc.OodServiceStub(channel)
        empty = await ood.ListProfiles(ood_pb2.ListProfilesRequest(model="digits_cnn"))
        assert not empty.profiles and not empty.next_page_token
        aigen = aigen_pb2_grpc.AigenServiceStub(channel)
        for call in (
            ood.ListProfiles(ood_pb2.ListProfilesRequest(page_token="%%%")),
            ood.ListProfiles(ood_pb2.ListProfilesRequest(page_size=-1)),
            aigen.ListDetectorProfiles(aigen_pb2.ListDetectorProfilesRequest(page_token="eA")),
            aigen.ListDetectorProfiles(aigen_pb2.ListDetectorProfilesRequest(page_size=-1)),
        ):
            assert await _code(call) == grpc.StatusCode.INVALID_ARGUMENT
