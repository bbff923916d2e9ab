"""How `Job.wait` follows a job across a server restart: it watches again until its deadline.

A WatchJob stream breaks with UNAVAILABLE when the server stops (a restart, a
drain) and may end before the job does. The job itself survives: a server
started on the same data resumes it. So a wait that loses its stream opens a
new one after a short pause, with backoff, until the job ends or the wait's
deadline passes. `JobWait` decides (what to watch, how long to pause, when to
give up); `Client._wait` and `AsyncClient._wait` run the same loop with it and
differ only in how they sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from assay.client import _calls as calls
from assay.client._errors import JobTimeoutError, UnavailableError
from assay.client._jobs import JobInfo, JobProgress, succeeded, timed_out

FIRST_PAUSE_S = 0.1
"""Pause before the first new watch after the stream broke; doubled each time after."""
LONGEST_PAUSE_S = 2.0
"""The backoff stops growing here."""
UNREACHABLE_WITHOUT_DEADLINE_S = 300.0
"""A wait without a deadline gives up after the server was unreachable this long."""


@dataclass
class JobWait:
    """One `wait` on one job: its deadline, the last state seen and the reconnect backoff."""

    job_id: str
    timeout_s: float | None
    clock: Callable[[], float] = time.monotonic
    last: JobInfo | None = None
    """The job's latest state from any stream."""
    _deadline: float | None = field(init=False, default=None)
    _pause: float = field(init=False, default=FIRST_PAUSE_S)
    _unreachable_since: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.timeout_s is not None:
            self._deadline = self.clock() + self.timeout_s

    def watch(self) -> calls.Call[JobProgress]:
        """The WatchJob call to open now, its deadline the time the wait has left.

        Raises:
            JobTimeoutError: No time is left.
        """
        left = None if self._deadline is None else self._deadline - self.clock()
        if left is not None and left <= 0:
            raise self.timed_out()
        return calls.watch_job(self.job_id, left)

    def seen(self, event: JobProgress) -> None:
        """Record an event: the server answers, so the next break starts a fresh backoff."""
        self.last = event.job
        self._pause, self._unreachable_since = FIRST_PAUSE_S, None

    def result(self) -> JobInfo:
        """The job once a stream ended (see `succeeded`).

        Raises:
            JobFailedError: It failed.
            JobCancelledError: It was cancelled.
            UnavailableError: The stream ended before the job did (watch again).
        """
        return succeeded(self.job_id, self.last)

    def pause(self, error: UnavailableError) -> float:
        """Seconds to sleep before watching again, after the stream broke with `error`.

        Raises:
            JobTimeoutError: The deadline has passed (caused by `error`).
            UnavailableError: `error` itself, when the wait has no deadline and
                the server has been unreachable for UNREACHABLE_WITHOUT_DEADLINE_S.
        """
        now = self.clock()
        if self._unreachable_since is None:
            self._unreachable_since = now
        pause, self._pause = self._pause, min(2 * self._pause, LONGEST_PAUSE_S)
        if self._deadline is None:
            if now - self._unreachable_since >= UNREACHABLE_WITHOUT_DEADLINE_S:
                raise error
            return pause
        if now >= self._deadline:
            raise self.timed_out() from error
        return min(pause, self._deadline - now)

    def timed_out(self) -> JobTimeoutError:
        """The error for a deadline that passed, saying so when the server was unreachable."""
        unreachable = self._unreachable_since is not None
        reason = "the server was unreachable at the end" if unreachable else ""
        return timed_out(self.job_id, self.timeout_s, self.last, reason)
