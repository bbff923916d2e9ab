"""Child process for the kill -9 tests: replaces a dataset or saves a profile, over and over.

    python -m tests.integration._crash_child upload ROOT STORE_URL PAUSE_AT
    python -m tests.integration._crash_child profile STORE_URL

``upload`` first creates dataset "d" with file set A (announcing "ready"),
then replaces it with B, A, B, ... through the server's own upload code and
a real SQLite store. With PAUSE_AT >= 0 it stops, during the first replace,
just before (even k) or just after (odd k) its (k // 2)-th filesystem step
(rename, replace, symlink, unlink, mkdir, rmtree made by assay.server code),
prints "paused NAME" and waits to be killed; it prints "steps N" when a
replace had fewer. ``profile`` stores profile "m" alternately as A and B.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assay.server.dataset_catalog import UploadedDatasets
from assay.server.store import open_store

STEPS = ("rename", "replace", "symlink", "unlink", "mkdir")


def file_set(which: str) -> dict[str, bytes]:
    """A and B share some paths with different contents, so a mix cannot pass as either."""
    if which == "A":
        return {f"cls/{i:03d}.png": f"A-{i}".encode() * 50 for i in range(120)}
    files = {f"cls/{i:03d}.png": f"B-{i}".encode() * 40 for i in range(80)}
    files.update({f"extra/{i:03d}.png": f"B-extra-{i}".encode() for i in range(40)})
    return files


def profile_document(which: str) -> tuple[dict[str, Any], bytes]:
    """A profile whose document names its blob's digest, so a torn pair is detectable."""
    blob = (which.encode() * (1 << 20)) * 6
    return {"which": which, "sha256": hashlib.sha256(blob).hexdigest()}, blob


class Pauser:
    """Counts filesystem steps made by assay.server code; stops the process at one of them."""

    def __init__(self, pause_at: int) -> None:
        self.pause_at = pause_at
        self.count = -1  # counting starts with the first replace
        self._lock = threading.Lock()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            if self.count < 0 or not _from_assay(sys._getframe(1)):
                return fn(*args, **kwargs)
            self._point(f"before {name}")
            result = fn(*args, **kwargs)
            self._point(f"after {name}")
            return result

        return step

    def _point(self, name: str) -> None:
        with self._lock:
            current, self.count = self.count, self.count + 1
        if current == self.pause_at:
            print(f"paused {name}", flush=True)
            threading.Event().wait()


def _from_assay(frame: Any) -> bool:
    while frame is not None and frame.f_globals.get("__name__", "").startswith("pathlib"):
        frame = frame.f_back
    return frame is not None and frame.f_globals.get("__name__", "").startswith("assay.server")


async def upload(datasets: UploadedDatasets, files: dict[str, bytes]) -> None:
    job = await datasets.begin("d", replace=True)
    for path, data in files.items():
        await job.add(path, data)
    await datasets.commit(job, "child")
    await datasets.aclose()  # old versions removed before the next round


async def uploads(root: Path, url: str, pause_at: int) -> None:
    pauser = Pauser(pause_at)
    for name in STEPS:
        setattr(os, name, pauser.wrap(name, getattr(os, name)))
    shutil.rmtree = pauser.wrap("rmtree", shutil.rmtree)  # type: ignore[assignment]
    store = await asyncio.to_thread(open_store, url)
    datasets = UploadedDatasets(root, store, 1 << 30, settle_s=0)  # prune at once
    await datasets.start()
    await upload(datasets, file_set("A"))
    print("ready", flush=True)
    pauser.count = 0
    rounds = 0
    while True:
        await upload(datasets, file_set("B" if rounds % 2 == 0 else "A"))
        rounds += 1
        if pause_at >= 0 and rounds == 1:
            print(f"steps {pauser.count}", flush=True)
            return


def profiles(url: str) -> None:
    store = open_store(url)
    first = True
    while True:
        for which in ("A", "B"):
            document, blob = profile_document(which)
            store.put_profile("ood", "m", "1", document, blob)
            if first:
                print("ready", flush=True)
                first = False


if __name__ == "__main__":
    if sys.argv[1] == "upload":
        asyncio.run(uploads(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
    else:
        profiles(sys.argv[2])
