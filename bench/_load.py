"""Closed-loop gRPC load generation and server subprocess helpers for the benchmarks."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LoadResult:
    """Throughput and latency of one load run."""

    name: str
    concurrency: int
    requests: int
    seconds: float
    latencies_s: np.ndarray

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def line(self, extra: str = "") -> str:
        p50, p99 = np.percentile(self.latencies_s, [50, 99]) * 1000
        return (
            f"{self.name:<22} c={self.concurrency:<3} {self.rps:9.0f} req/s  "
            f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms {extra}"
        )


async def closed_loop(
    name: str,
    call: Callable[[], Awaitable[object]],
    concurrency: int,
    duration_s: float,
    warmup: int = 20,
) -> LoadResult:
    """`concurrency` workers call back-to-back for duration_s (after a short warm-up)."""
    for _ in range(warmup):
        await call()
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration_s

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return LoadResult(name, concurrency, len(latencies), elapsed, np.asarray(latencies))


class ServerProcess:
    """A server in a child process that prints 'listening on host:port' on stderr."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, stdin: bytes | None = None
    ) -> None:
        # Each benchmark server keeps its jobs and profiles in its own temporary folder,
        # never in the user's ~/.local/share/assay (unless the caller names a folder).
        self._data = tempfile.TemporaryDirectory(prefix="assay-bench-")
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, "ASSAY_DATA__DIR": self._data.name, **(env or {})},
            stdin=subprocess.PIPE if stdin is not None else None,
            stderr=subprocess.PIPE,
        )
        if stdin is not None and self.proc.stdin is not None:
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        assert self.proc.stderr is not None
        self._stderr = io.TextIOWrapper(self.proc.stderr)
        self.port = self.wait_for(r"listening on [\d.]+:(\d+)")

    def wait_for(self, pattern: str) -> int:
        """Read stderr until a line matches pattern; return its first group as int."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self._stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            match = re.search(pattern, line)
            if match:
                return int(match.group(1))
        raise TimeoutError("server did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()
        self._data.cleanup()


def scrape(port: int) -> dict[str, float]:
    """Sample name+labels -> value from a /metrics endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
