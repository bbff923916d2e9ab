"""JobService: get, list, cancel, watch and delete jobs, and fetch their reports.

Every store read runs on a worker thread (``asyncio.to_thread``), never on the
event loop, so a slow database never stalls other calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
from google.rpc import status_pb2

from assay.server.errors import (
    ErrorCode,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from assay.server.jobs.manager import JobEvent, JobManager
from assay.server.jobs.specs import JobSpec
from assay.server.services.mirror import mirrored
from assay.server.services.pagination import check_key_types, page_request
from assay.server.services.timestamps import timestamp
from assay.server.store.records import JobRecord, JobState
from assay.v1 import jobs_pb2, jobs_pb2_grpc

_STATES = {
    JobState.PENDING: jobs_pb2.JOB_STATE_PENDING,
    JobState.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: jobs_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: jobs_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: jobs_pb2.JOB_STATE_CANCELLED,
}
_FROM_PROTO = {value: state for state, value in _STATES.items()}


def status_code(code: ErrorCode) -> int:
    """ErrorCode -> the google.rpc.Code number gRPC uses for it."""
    value: int = grpc.StatusCode[code.name].value[0]
    return value


def error_status(record: JobRecord) -> status_pb2.Status | None:
    """Why the job failed or was cancelled, as a google.rpc.Status; None otherwise."""
    if record.state is JobState.CANCELLED:
        code = grpc.StatusCode.CANCELLED.value[0]
    elif record.state is JobState.FAILED:
        # No recorded code: a store from before codes were kept.
        unknown = grpc.StatusCode.UNKNOWN.value[0]
        code = unknown if record.error_code is None else status_code(record.error_code)
    else:
        return None
    return status_pb2.Status(code=code, message=record.error or "")


def job_to_proto(record: JobRecord) -> jobs_pb2.Job:
    """JobRecord -> Job."""
    return mirrored(
        jobs_pb2.Job,
        record,
        state=_STATES[record.state],
        error=error_status(record),
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        spec_json=json.dumps(record.spec, sort_keys=True),
    )


async def start_job(jobs: JobManager, kind: str, spec: JobSpec) -> jobs_pb2.Job:
    """Start a job of ``kind`` and answer with its Job message (what every Start RPC returns).

    Raises:
        AssayError: The job kind refuses the spec (unknown model, missing dataset, ...).
    """
    return job_to_proto(await jobs.start(kind, spec))


def event_to_proto(event: JobEvent) -> jobs_pb2.JobEvent:
    """JobEvent -> JobEvent message."""
    message = jobs_pb2.JobEvent(
        job=job_to_proto(event.record),
        images_per_second=event.images_per_s,
        partial_json=json.dumps(event.partial, sort_keys=True),
    )
    if event.eta_s is not None:
        message.eta_seconds = event.eta_s
    return message


def _job_id(value: str) -> str:
    if not value:
        raise InvalidArgumentError("id is empty; pass the id StartEvaluation returned")
    return value


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """Converts JobService calls to JobManager calls."""

    def __init__(self, manager: JobManager) -> None:
        self._manager = manager

    async def GetJob(
        self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """One job."""
        return job_to_proto(await asyncio.to_thread(self._manager.store.get, _job_id(request.id)))

    async def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.ListJobsResponse:
        """Jobs, newest first, one page at a time."""
        unknown = [s for s in request.states if s not in _FROM_PROTO]
        if unknown:
            raise InvalidArgumentError(f"unknown job states {unknown}")
        states = sorted({_FROM_PROTO[s] for s in request.states})
        page = page_request(
            request.page_size,
            request.page_token,
            {"rpc": "ListJobs", "kind": request.kind, "states": [s.value for s in states]},
        )
        before = None
        if page.after is not None:
            created_at, job_id = check_key_types(page.after, (int, float), str)
            before = (float(created_at), str(job_id))
        records = await asyncio.to_thread(
            self._manager.store.list,
            kind=request.kind or None,
            states=states or None,
            limit=page.size + 1,
            before=before,
        )
        response = jobs_pb2.ListJobsResponse(jobs=[job_to_proto(r) for r in records[: page.size]])
        if len(records) > page.size:
            last = records[page.size - 1]
            response.next_page_token = page.token_after((last.created_at, last.id))
        return response

    async def CancelJob(
        self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Cancel a live job, wherever it runs."""
        return job_to_proto(await self._manager.cancel(_job_id(request.id)))

    async def DeleteJob(
        self, request: jobs_pb2.DeleteJobRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Job:
        """Delete an ended job with its units and report."""
        return job_to_proto(await self._manager.delete(_job_id(request.id)))

    async def WatchJob(
        self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Progress events until the job ends."""
        async for event in self._manager.watch(_job_id(request.id)):
            yield event_to_proto(event)

    async def GetReport(
        self, request: jobs_pb2.GetReportRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.Report:
        """The report of a succeeded job."""
        store = self._manager.store
        record = await asyncio.to_thread(store.get, _job_id(request.id))
        if record.state is not JobState.SUCCEEDED:
            raise FailedPreconditionError(
                f"job {record.id} is {record.state.value}; a report exists once it succeeded"
                + (f" (error: {record.error})" if record.error else "")
            )
        result = await asyncio.to_thread(store.result, record.id)
        if result is None:
            raise NotFoundError(f"job {record.id} has no stored report")
        return jobs_pb2.Report(job_id=record.id, json=json.dumps(result, sort_keys=True))
