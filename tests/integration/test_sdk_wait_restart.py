"""`Job.wait` outlives a server restart: the progress stream breaks with UNAVAILABLE when the
server drains, the wait watches again, and a server started on the same data dir (or
PostgreSQL store) and port resumes the job and ends the wait (sync and async; real servers,
nothing mocked; on both store engines)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import Any

import assay.client as sdk
from assay.client._background import BackgroundServer
from tests.conftest import ROOT, demo_settings

SAMPLES = ROOT / "deploy" / "samples"
HELDOUT = SAMPLES / "digits_heldout"
SUITE: dict[str, Any] = {"sample_limit": 50}
"""The "standard" preset on 50 images: long enough (about 100 units) to stop mid-job."""


def in_thread(function: Any, *args: Any) -> Future[Any]:
    """Run `function(*args)` on a thread; its result (or exception) lands in the future."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # handed to the test through the future
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def wait_sync(address: str, job_id: str) -> sdk.Job:
    with sdk.Client(address) as client:
        return client.get_job(job_id).wait(timeout_s=240)


def wait_async(address: str, job_id: str) -> sdk.AsyncJob:
    async def wait() -> sdk.AsyncJob:
        async with sdk.AsyncClient(address) as client:
            return await (await client.get_job(job_id)).wait(timeout_s=240)

    return asyncio.run(wait())


def test_wait_watches_again_across_a_server_restart_until_the_resumed_job_ends(
    server_store: dict[str, str],
) -> None:
    settings = demo_settings(data={"roots": [str(SAMPLES)], **server_store})
    first = BackgroundServer(settings)
    port = first.__enter__().port
    address = f"127.0.0.1:{port}"
    try:
        with sdk.Client(address) as client:
            jobs = [client.start_evaluation("digits_cnn", str(HELDOUT), "standard", **SUITE)]
            jobs.append(client.start_evaluation("digits_cnn", str(HELDOUT), "standard", **SUITE))
            waits = [in_thread(wait_sync, address, jobs[0].id)]
            waits.append(in_thread(wait_async, address, jobs[1].id))
            while min(client.get_job(j.id).done for j in jobs) < 1:
                time.sleep(0.05)
            assert not any(w.done() for w in waits), "a job ended before the server stopped"
    finally:
        first.__exit__(None, None, None)  # drains: the open streams break with UNAVAILABLE
    time.sleep(1.0)  # the waits meet a closed port for a while
    gave_up = [w.exception() for w in waits if w.done()]
    assert not gave_up, f"a wait gave up while the server was away: {gave_up}"

    data = {"roots": [str(SAMPLES)], "dir": settings.data.dir, **server_store}
    same = {"grpc": {"port": port}, "data": data}
    with BackgroundServer(demo_settings(**same)):
        sync_done, async_done = (w.result(timeout=240) for w in waits)
        assert isinstance(sync_done, sdk.Job) and isinstance(async_done, sdk.AsyncJob)
        for done, job in zip((sync_done, async_done), jobs, strict=True):
            assert done.id == job.id and done.state is sdk.JobState.SUCCEEDED
            assert done.attempts == 2 and done.done == done.total, done
