"""A real server on the store data.url names: PostgreSQL, and one it cannot reach."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest

from assay.server.app import create_server
from assay.server.errors import UnavailableError
from assay.v1 import jobs_pb2
from tests._raw_sql import raw
from tests.conftest import ROOT, demo_settings
from tests.integration.test_robustness_jobs import start_request, stubs


async def test_a_server_on_postgresql_runs_a_suite_and_keeps_it_there(postgres_url: str) -> None:
    settings = demo_settings(
        data={"roots": [str(ROOT / "deploy" / "samples")], "url": postgres_url}
    )
    app = await create_server(settings)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            robustness, jobs = stubs(channel)
            job = await robustness.StartEvaluation(start_request())
            events = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(id=job.id))]
            assert events[-1].job.state == jobs_pb2.JOB_STATE_SUCCEEDED, events[-1].job.error
            reply = await jobs.GetReport(jobs_pb2.GetReportRequest(id=job.id))
            report = json.loads(reply.json)
    finally:
        await app.stop(0)
    assert report["schema"] == "assay.robustness.report/v1"
    assert raw(postgres_url, "SELECT state, done, total FROM jobs WHERE id = ?", (job.id,)) == [
        ("succeeded", job.total, job.total)
    ]
    stored = raw(postgres_url, "SELECT COUNT(*) FROM units WHERE job_id = ?", (job.id,))
    assert stored == [(job.total,)]
    assert not (settings.data.dir / "assay.sqlite3").exists()  # Nothing went to SQLite.


async def test_a_server_whose_postgresql_is_unreachable_fails_to_start_saying_where() -> None:
    url = "postgresql://assay:s3cret@127.0.0.1:1/assay"  # Port 1: connection refused.
    settings = demo_settings(data={"url": url, "connect_timeout_s": 2.0})
    with pytest.raises(UnavailableError, match=r"postgresql://assay:\*\*\*@127\.0\.0\.1:1/assay"):
        await create_server(settings)


def test_assay_serve_on_an_unreachable_store_exits_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "ASSAY_GRPC__PORT": "0",
        "ASSAY_METRICS__ENABLED": "false",
        "ASSAY_DATA__DIR": str(tmp_path),
        "ASSAY_DATA__URL": "postgresql://assay:s3cret@127.0.0.1:1/assay",
        "ASSAY_DATA__CONNECT_TIMEOUT_S": "2",
    }
    done = subprocess.run(
        [sys.executable, "-m", "assay.client", "serve"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "cannot start (UNAVAILABLE)" in done.stderr
    assert "postgresql://assay:***@127.0.0.1:1/assay" in done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
