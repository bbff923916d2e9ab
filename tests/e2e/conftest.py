"""A real tritonserver (nvidia-pytriton's bundled binary) for the e2e tier."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DIGITS_MANIFEST, REPOSITORY, ROOT

sys.path.insert(0, str(ROOT / "deploy" / "triton"))
import local_triton


@pytest.fixture(scope="session")
def cpu_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "model_repository"
    return local_triton.generate_cpu_repository(REPOSITORY, out, only=("digits_cnn", "aigen_demo"))


def start_triton(repository: Path, tmp: Path, **ports: int) -> local_triton.TritonProcess:
    triton = local_triton.TritonProcess(repository, log_path=tmp / "tritonserver.log", **ports)
    return triton.start(timeout_s=120)


@pytest.fixture(scope="session")
def triton(
    cpu_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[local_triton.TritonProcess]:
    server = start_triton(cpu_repository, tmp_path_factory.mktemp("triton-log"))
    try:
        yield server
    finally:
        server.stop()


def triton_entry(url: str, name: str = "digits_triton", **extra: Any) -> dict[str, Any]:
    """A registry entry serving the demo model through Triton."""
    return {
        "name": name,
        "backend": "triton",
        "triton": {"url": url, "model": "digits_cnn"},
        "input": DIGITS_MANIFEST["input"],
        "outputs": DIGITS_MANIFEST["outputs"],
        **extra,
    }
