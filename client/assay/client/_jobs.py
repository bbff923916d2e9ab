"""Job and robustness-suite helpers shared by Client and AsyncClient."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from assay.v1 import jobs_pb2, robustness_pb2

MAX_PAGE_SIZE = 1000
"""The server's largest page (ListJobs and the other List RPCs)."""

_ATTACKS = {
    "square_linf": robustness_pb2.ATTACK_KIND_SQUARE_LINF,
    "square_l2": robustness_pb2.ATTACK_KIND_SQUARE_L2,
    "fgsm": robustness_pb2.ATTACK_KIND_FGSM,
    "pgd_linf": robustness_pb2.ATTACK_KIND_PGD_LINF,
    "pgd_l2": robustness_pb2.ATTACK_KIND_PGD_L2,
}
_SCALARS = (
    "perturbation_frames",
    "shift_consistency",
    "calibration",
    "subgroups",
    "sample_limit",
    "seed",
)


@dataclass(frozen=True)
class Job:
    """A server-side job (e.g. a robustness suite)."""

    id: str
    kind: str
    state: str
    """pending | running | succeeded | failed | cancelled."""
    done: int
    total: int
    stage: str
    error: str
    """Why it failed or was cancelled ("" otherwise)."""
    attempts: int
    created_at: float
    """Seconds since the epoch."""
    updated_at: float
    error_code: str = ""
    """The failure's gRPC status code name, e.g. "INVALID_ARGUMENT" (a request the
    job could not carry out) or "INTERNAL" (a server fault); "CANCELLED" for a
    cancelled job; "" when the job has no error."""

    @property
    def finished(self) -> bool:
        """True once the job can no longer change."""
        return self.state in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobProgress:
    """One event of a job's progress stream."""

    job: Job
    images_per_second: float
    eta_s: float | None
    partial: dict[str, Any]


def _seconds(timestamp: Timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


def _code_name(code: int) -> str:
    names = {status.value[0]: status.name for status in grpc.StatusCode}
    return names.get(code, str(code))


def job(message: jobs_pb2.Job) -> Job:
    """Job message -> Job."""
    failed = message.HasField("error")
    return Job(
        id=message.id,
        kind=message.kind,
        state=jobs_pb2.JobState.Name(message.state).removeprefix("JOB_STATE_").lower(),
        done=message.done,
        total=message.total,
        stage=message.stage,
        error=message.error.message,
        attempts=message.attempts,
        created_at=_seconds(message.created_at),
        updated_at=_seconds(message.updated_at),
        error_code=_code_name(message.error.code) if failed else "",
    )


def progress(event: jobs_pb2.JobEvent) -> JobProgress:
    """JobEvent message -> JobProgress."""
    return JobProgress(
        job=job(event.job),
        images_per_second=event.images_per_second,
        eta_s=event.eta_seconds if event.HasField("eta_seconds") else None,
        partial=json.loads(event.partial_json or "{}"),
    )


def suite_message(preset: str, overrides: Mapping[str, Any]) -> robustness_pb2.Suite:
    """Suite message from a preset name and field overrides (see SuiteSpec)."""
    suite = robustness_pb2.Suite(preset=preset)
    for field in ("corruptions", "severities", "perturbations"):
        if overrides.get(field):
            getattr(suite, field).extend(overrides[field])
    for field in _SCALARS:
        if overrides.get(field) is not None:
            setattr(suite, field, overrides[field])
    for attack in overrides.get("attacks") or ():
        if attack["kind"] not in _ATTACKS:
            raise ValueError(f"unknown attack {attack['kind']!r}; known: {', '.join(_ATTACKS)}")
        suite.attacks.add(
            kind=_ATTACKS[attack["kind"]],
            epsilon=attack["epsilon"],
            queries=attack.get("queries", 0),
            steps=attack.get("steps", 0),
        )
    unknown = set(overrides) - {"corruptions", "severities", "perturbations", "attacks", *_SCALARS}
    if unknown:
        raise ValueError(f"unknown suite fields {sorted(unknown)}")
    return suite


def list_request(kind: str, states: Iterable[str], limit: int) -> jobs_pb2.ListJobsRequest:
    """ListJobsRequest for the first page of at most ``limit`` jobs."""
    return jobs_pb2.ListJobsRequest(
        kind=kind,
        states=[jobs_pb2.JobState.Value(f"JOB_STATE_{s.upper()}") for s in states],
        page_size=min(limit, MAX_PAGE_SIZE),
    )
