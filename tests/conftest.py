"""Shared fixtures: the committed demo model and a real grpc.aio server on port 0."""

from __future__ import annotations

import io
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from PIL import Image

from assay.server.app import AssayServer, create_server
from assay.server.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "deploy" / "triton" / "model_repository"
DIGITS_ONNX = REPOSITORY / "digits_cnn" / "1" / "model.onnx"
DIGITS_MANIFEST = yaml.safe_load((REPOSITORY / "digits_cnn" / "assay.yaml").read_text())
"""The committed registry entry: the one source of the demo model's preprocessing."""
SAMPLES = sorted((ROOT / "deploy" / "samples" / "digits").glob("*.png"))


TEST_DATA = Path(tempfile.mkdtemp(prefix="assay-tests-"))
"""Each server built by the tests gets its own data folder (job database) under here."""


def demo_settings(**overrides: Any) -> Settings:
    """Settings serving only the committed digits model, on free ports, with a fresh data dir."""
    base: dict[str, Any] = {
        "grpc": {"port": 0, "grace_period_s": 2.0},
        "metrics": {"port": 0},
        "data": {"dir": str(TEST_DATA / uuid.uuid4().hex)},
        "jobs": {"workers": 2},
        "model_repository": None,
        "models": [
            {
                "name": "digits_cnn",
                "path": str(DIGITS_ONNX),
                "labels_file": str(REPOSITORY / "digits_cnn" / "labels.txt"),
                "input": DIGITS_MANIFEST["input"],
                "outputs": DIGITS_MANIFEST["outputs"],
            }
        ],
        "onnx": {"intra_op_threads": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(**base)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def server() -> AsyncIterator[AssayServer]:
    app = await create_server(demo_settings())
    await app.start()
    try:
        yield app
    finally:
        await app.stop(0)


@pytest.fixture
async def channel(server: AssayServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch
