"""`JobWait`, the decisions behind `Job.wait` when the progress stream breaks: what to watch,
how long to pause, when to give up (a settable clock; real proto messages, no server)."""

from __future__ import annotations

import grpc
import pytest

import assay.client as sdk
from assay.client import _waiting
from assay.client._jobs import JobProgress
from assay.client._jobs import job as to_job
from assay.client._waiting import JobWait
from assay.v1 import jobs_pb2


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(state: int, done: int = 0) -> JobProgress:
    info = to_job(jobs_pb2.Job(id="j", state=state, done=done, total=9))  # type: ignore[arg-type]
    return JobProgress(job=info, images_per_second=0.0, eta_s=None, partial={})


def broken() -> sdk.UnavailableError:
    return sdk.UnavailableError(grpc.StatusCode.UNAVAILABLE, "Cancelling all calls")


def test_each_watch_gets_the_time_the_wait_has_left() -> None:
    clock = Clock()
    waiting = JobWait("j", 10.0, clock)
    assert waiting.watch().deadline(30.0) == pytest.approx(10.0)
    clock.now += 6.5
    call = waiting.watch()
    assert call.request.id == "j" and call.deadline(30.0) == pytest.approx(3.5)
    assert JobWait("j", None, clock).watch().deadline(30.0) is None  # no limit, no deadline
    clock.now += 3.5
    with pytest.raises(sdk.JobTimeoutError):
        waiting.watch()


def test_pauses_double_up_to_the_longest_and_an_event_starts_them_again() -> None:
    clock = Clock()
    waiting = JobWait("j", None, clock)
    pauses = []
    for _ in range(7):
        pauses.append(waiting.pause(broken()))
        clock.now += pauses[-1]
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert (_waiting.FIRST_PAUSE_S, _waiting.LONGEST_PAUSE_S) == (0.1, 2.0)
    waiting.seen(event(jobs_pb2.JOB_STATE_RUNNING, 3))
    assert waiting.pause(broken()) == 0.1 and waiting.last is not None and waiting.last.done == 3


def test_a_wait_with_a_deadline_times_out_at_the_deadline_not_before() -> None:
    clock = Clock()
    waiting = JobWait("j", 1.0, clock)
    waiting.seen(event(jobs_pb2.JOB_STATE_RUNNING, 2))
    total = 0.0
    while True:
        error = broken()
        try:
            pause = waiting.pause(error)
        except sdk.JobTimeoutError as exc:
            timed_out = exc
            break
        total += pause
        clock.now += pause
    assert total == pytest.approx(1.0)  # pauses 0.1, 0.2, 0.4 and the 0.3 s left, then the end
    assert timed_out.__cause__ is error and timed_out.job is waiting.last
    assert timed_out.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert timed_out.details == (
        "job j still running after 1.0 s (the server was unreachable at the end)"
    )


def test_a_wait_without_deadline_gives_up_after_the_unreachable_window() -> None:
    clock = Clock()
    waiting = JobWait("j", None, clock)
    waiting.seen(event(jobs_pb2.JOB_STATE_RUNNING))
    waiting.pause(broken())
    clock.now += _waiting.UNREACHABLE_WITHOUT_DEADLINE_S - 0.01
    assert waiting.pause(broken()) == pytest.approx(0.2)
    clock.now += 0.01
    error = broken()
    with pytest.raises(sdk.UnavailableError) as raised:
        waiting.pause(error)
    assert raised.value is error
    waiting.seen(event(jobs_pb2.JOB_STATE_RUNNING))  # the server answered: a fresh window
    assert waiting.pause(broken()) == 0.1


def test_a_stream_that_ends_before_the_job_is_watched_again_and_the_end_is_the_result() -> None:
    waiting = JobWait("j", None, Clock())
    with pytest.raises(sdk.UnavailableError):  # no event yet: the loop pauses and watches again
        waiting.result()
    waiting.seen(event(jobs_pb2.JOB_STATE_RUNNING))
    with pytest.raises(sdk.UnavailableError):
        waiting.result()
    waiting.seen(event(jobs_pb2.JOB_STATE_SUCCEEDED, 9))
    assert waiting.result().state is sdk.JobState.SUCCEEDED
    waiting.seen(event(jobs_pb2.JOB_STATE_CANCELLED))
    with pytest.raises(sdk.JobCancelledError):
        waiting.result()


def test_a_deadline_passing_mid_stream_names_the_last_state_without_blaming_the_server() -> None:
    clock = Clock()
    waiting = JobWait("j", 5.0, clock)
    waiting.seen(event(jobs_pb2.JOB_STATE_PENDING))
    error = waiting.timed_out()
    assert error.details == "job j still pending after 5.0 s" and error.job is waiting.last
