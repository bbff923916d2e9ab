"""After ``kill -9`` of a real server process, none of its worker processes remain.

The server runs as a subprocess (``python -m assay.client serve``) with its own
data folder. The test waits, reading /proc, until exactly the processes the
server starts exist: the forkserver and the resource tracker (its children)
and every one of the ``WORKERS`` corruption workers (the forkserver's
children; the pool spawns them one by one at start). Then the server is
SIGKILLed, and each of them must be gone (or a zombie awaiting its reaper)
before a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

WORKERS = 3
DEADLINE_S = 10.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def cmdline(pid: int) -> str:
    """A process's command line, its arguments joined by spaces ("" once it is gone)."""
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
    except OSError:
        return ""


def _parents() -> dict[int, int]:
    """Every live process's parent pid, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Children, grandchildren, ... of ``pid`` now."""
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "ASSAY_GRPC__PORT": "0", "ASSAY_METRICS__ENABLED": "false",
           "ASSAY_DATA__DIR": str(data_dir), "ASSAY_JOBS__WORKERS": str(WORKERS),
           "ASSAY_DATA__ROOTS": json.dumps([str(ROOT / "deploy" / "samples")])}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "assay.client", "serve"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "server exited early"
        match = re.search(r"assay listening on [\d.]+:(\d+)", line)
        if match:
            return proc, int(match.group(1))
    raise AssertionError("server did not start")


def helpers(pid: int) -> tuple[set[int], set[int], set[int]]:
    """The server's forkserver, resource tracker and pool workers now, by command line."""
    parents = _parents()
    children = {child for child, parent in parents.items() if parent == pid and running(child)}
    forkserver = {c for c in children if "multiprocessing.forkserver" in cmdline(c)}
    tracker = {c for c in children if "multiprocessing.resource_tracker" in cmdline(c)}
    workers = {w for w, parent in parents.items() if parent in forkserver and running(w)}
    return forkserver, tracker, workers


def wait_for_workers(pid: int) -> set[int]:
    """The server's descendants once the forkserver, the tracker and all WORKERS workers run."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        forkserver, tracker, workers = helpers(pid)
        if len(forkserver) == 1 and len(tracker) == 1 and len(workers) == WORKERS:
            found = descendants(pid)
            expected = forkserver | tracker | workers
            assert found == expected, {p: cmdline(p) for p in found ^ expected}
            return found
        assert len(workers) <= WORKERS, {w: cmdline(w) for w in workers}
        time.sleep(0.05)
    raise AssertionError(f"workers did not all start: {helpers(pid)}")


def test_no_worker_outlives_a_killed_server(tmp_path: Path) -> None:
    server, _ = start_server(tmp_path / "data")
    try:
        children = wait_for_workers(server.pid)
        killed_at = time.monotonic()
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        left = {pid for pid in children if running(pid)}
        while left and time.monotonic() < killed_at + DEADLINE_S:
            time.sleep(0.01)
            left = {pid for pid in left if running(pid)}
        took = time.monotonic() - killed_at
    finally:
        if server.poll() is None:
            server.kill()
        server.stderr.close()  # type: ignore[union-attr]
    for pid in left:  # do not leak them into the rest of the test session
        os.kill(pid, signal.SIGKILL)
    assert len(children) == WORKERS + 2  # the forkserver, the resource tracker, every worker
    assert not left, f"{len(left)} of {len(children)} descendants still running after {took:.1f}s"
    print(f"{len(children)} descendants gone {took:.3f}s after kill -9 of the server")
