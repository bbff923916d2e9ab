"""Keeps every profile cache current: one background task revalidates them all by etag.

Each round asks the store for the etags of every profile kind (one cheap query
per kind, no payloads) and drops what another replica replaced or deleted, so
a profile fitted through any replica is served here within ``interval_s``.
While the store cannot be reached the caches keep serving what they hold; the
outage is logged once, and its end too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from assay.server.errors import AssayError
from assay.server.profiles.store import ProfileStore

log = logging.getLogger(__name__)


class ProfileRefresher:
    """Runs `ProfileStore.refresh` for some stores every ``interval_s`` while started."""

    def __init__(self, stores: Sequence[ProfileStore[Any]], interval_s: float) -> None:
        """Refreshes ``stores`` every ``interval_s`` seconds once `start`ed."""
        self.stores = list(stores)
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        """Starts the background task on the running loop (again after `stop`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stops the background task and waits for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> int:
        """One round over every store; how many cached profiles went stale.

        Raises:
            AssayError: The store failed (e.g. UnavailableError); the caches are untouched.
        """
        dropped = 0
        for store in self.stores:
            dropped += await store.refresh()
        return dropped

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                dropped = await self.refresh()
            except Exception as exc:  # the loop must outlive any one failure
                if not self._failing:
                    log.warning(
                        "cannot check profiles for changes, serving cached ones: %s",
                        exc,
                        exc_info=not isinstance(exc, AssayError),  # a bug: show where
                    )
                self._failing = True
                continue
            if self._failing:
                log.info("checking profiles for changes again")
            self._failing = False
            if dropped:
                log.debug("%d cached profile(s) changed elsewhere; re-read on next use", dropped)
