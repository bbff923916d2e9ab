"""kill -9 during a replace-upload and during a profile save: always the old or the new, whole.

A child process (`_crash_child`) runs the server's own upload code against a
real uploads folder and a real SQLite store, and is SIGKILLed: at every
filesystem step of a replace (before and after each), and at seeded random
moments over many rounds. After each kill the dataset must be exactly file
set A or exactly B; then the start-up sweep must leave no staging, no stray
version, no temporary link, and a store record naming the visible version.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from assay.server.dataset_catalog import UploadedDatasets
from assay.server.dataset_folders import STAGING, VERSIONS
from assay.server.store import Store, open_store
from tests.conftest import ROOT
from tests.integration._crash_child import file_set, profile_document

RANDOM_KILLS = 12
CHILD = "tests.integration._crash_child"


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", CHILD, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line or proc.poll() is None, f"child exited with {proc.wait()}"
    return line


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()


def contents(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def leftovers(root: Path) -> Counter[str]:
    """What a kill left behind, by kind (to show which windows the kills hit)."""
    found: Counter[str] = Counter()
    staging = root / STAGING
    for entry in staging.iterdir() if staging.exists() else ():
        kind = (
            "lock"
            if entry.suffix == ".lock"
            else "trash"
            if entry.name.startswith("trash-")
            else "staging"
        )
        found[kind] += 1  # fmt: skip
    found["link"] += sum(1 for p in root.iterdir() if p.name.startswith(".link-"))
    found["stray version"] += max(0, len(list((root / VERSIONS / "d").iterdir())) - 1)
    return +found


async def sweep_at_start(root: Path, store: Store) -> None:
    """What a server's start does to the uploads; settle_s=0: the versions a kill left go now."""
    datasets = UploadedDatasets(root, store, 1 << 30, settle_s=0)
    await datasets.start()
    await datasets.aclose()


def check_whole_then_sweep(root: Path, url: str) -> str:
    """The dataset is A or B; the start-up sweep cleans up and the store follows. Returns which."""
    seen = contents(root / "d")
    which = "A" if seen == file_set("A") else "B" if seen == file_set("B") else "torn"
    assert which != "torn", f"a mix of A and B: {sorted(seen)[:5]}..."
    store = open_store(url)
    try:
        asyncio.run(sweep_at_start(root, store))
        assert contents(root / "d") == seen, "the sweep does not change the visible version"
        assert leftovers(root) == Counter(), "the sweep removed every leftover"
        current = os.readlink(root / "d").split(os.sep)[-1]
        assert os.listdir(root / VERSIONS / "d") == [current]
        record = store.dataset("d")
        assert record is not None and record.version == current
    finally:
        store.close()
    return which


def test_kill_at_every_filesystem_step_of_a_replace(tmp_path: Path) -> None:
    probe = child(
        "upload", str(tmp_path / "probe"), f"sqlite:///{tmp_path}/probe.sqlite3", "1000000"
    )
    assert read_line(probe) == "ready"
    steps = int(read_line(probe).removeprefix("steps "))
    kill(probe)
    assert steps >= 10, "a replace has at least this many filesystem steps"
    hit: Counter[str] = Counter()
    for point in range(steps):
        root, url = tmp_path / f"p{point}", f"sqlite:///{tmp_path}/p{point}.sqlite3"
        proc = child("upload", str(root), url, str(point))
        assert read_line(proc) == "ready"
        paused = read_line(proc)
        assert paused.startswith("paused "), paused
        kill(proc)
        hit.update(leftovers(root))
        which = check_whole_then_sweep(root, url)
        hit[f"{paused.removeprefix('paused ')} -> {which}"] += 1
    print(f"{steps} kill points: {dict(hit)}")
    assert hit["stray version"] and hit["staging"], "kills landed inside the switch's windows"


def test_kill_at_random_moments_over_many_replaces(tmp_path: Path) -> None:
    rng = random.Random(11)
    root, url = tmp_path / "uploads", f"sqlite:///{tmp_path}/store.sqlite3"
    seen: Counter[str] = Counter()
    for _ in range(RANDOM_KILLS):
        proc = child("upload", str(root), url, "-1")
        assert read_line(proc) == "ready"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=rng.uniform(0.0, 0.6))
        kill(proc)
        seen.update(leftovers(root))
        seen[check_whole_then_sweep(root, url)] += 1
    print(f"{RANDOM_KILLS} random kills: {dict(seen)}")


def test_kill_during_profile_saves_leaves_a_whole_profile(tmp_path: Path) -> None:
    rng = random.Random(7)
    url = f"sqlite:///{tmp_path}/store.sqlite3"
    found: Counter[str] = Counter()
    for _ in range(RANDOM_KILLS):
        proc = child("profile", url)
        assert read_line(proc) == "ready"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=rng.uniform(0.0, 0.5))
        kill(proc)
        store = open_store(url)
        try:
            stored = store.get_profile("ood", "m", "1")
        finally:
            store.close()
        assert stored is not None and stored.blob is not None
        which = stored.document["which"]
        document, blob = profile_document(which)
        assert stored.document == document and stored.blob == blob, "document and arrays match"
        assert hashlib.sha256(stored.blob).hexdigest() == stored.document["sha256"]
        found[which] += 1
    print(f"{RANDOM_KILLS} kills mid profile save: {dict(found)}")
