"""Whether the store answers, for the server's health: pinged off the loop, with a timeout.

A replica whose database does not answer cannot run, resume or report jobs,
nor read a profile it has not cached, so it must leave the load balancer's
rotation (readiness) without being restarted (liveness): restarting does not
bring a database back. The probe is polled by the server's readiness watcher;
it never lets pings pile up: while one is still waiting on a hung database the
next poll waits on that same ping instead of starting another thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import Gauge

log = logging.getLogger(__name__)


class StoreProbe:
    """Pings the store each poll; reports up/down, logging once per change."""

    def __init__(
        self, ping: Callable[[], None], where: str, timeout_s: float, gauge: Gauge
    ) -> None:
        """Probe `ping` (raises when the store does not answer) of the store at `where`."""
        self._ping = ping
        self._where = where
        self._timeout_s = timeout_s
        self._gauge = gauge
        self._pending: asyncio.Future[None] | None = None
        self.up: bool | None = None
        """The last answer; None before the first check."""

    async def check(self) -> bool:
        """Ping (or keep waiting on the ping in flight) for at most timeout_s."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._ping))
        try:
            await asyncio.wait_for(asyncio.shield(self._pending), self._timeout_s)
        except TimeoutError:
            self._record(False, f"no answer within {self._timeout_s:g}s")
        except Exception as exc:  # any failure to answer means "down"
            self._record(False, str(exc) or type(exc).__name__)
        else:
            self._record(True, "")
        return bool(self.up)

    def _record(self, up: bool, reason: str) -> None:
        if up != self.up:
            if not up:
                log.warning(
                    "store %s unreachable (%s): health NOT_SERVING until it answers",
                    self._where, reason,
                )  # fmt: skip
            elif self.up is not None:
                log.info("store %s answers again: health SERVING", self._where)
        self.up = up
        self._gauge.set(1 if up else 0)

    async def aclose(self) -> None:
        """Wait briefly for a ping still in flight, so no thread outlives the store."""
        if self._pending is not None and not self._pending.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._pending), self._timeout_s)
            except Exception:  # closing: the answer no longer matters
                log.debug("store ping still pending at close", exc_info=True)
