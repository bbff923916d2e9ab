"""An in-process assay server on its own thread, for `assay demo` and scripts."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from assay.server.app import AssayServer, create_server
from assay.server.settings import Settings


class BackgroundServer:
    """Runs create_server(settings) on a private event loop in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="assay")
        self.app: AssayServer | None = None

    def __enter__(self) -> AssayServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            self.app = future.result(timeout=120)
        except BaseException:
            self._shutdown_loop()
            raise
        return self.app

    async def _start(self) -> AssayServer:
        app = await create_server(self._settings)
        await app.start()
        return app

    def __exit__(self, *exc: Any) -> None:
        if self.app is not None:
            asyncio.run_coroutine_threadsafe(self.app.stop(0.5), self._loop).result(timeout=30)
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
