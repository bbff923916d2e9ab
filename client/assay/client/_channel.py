"""Channel settings both clients share: message sizes, keepalive and UNAVAILABLE retries.

Retries use gRPC's own retry policy (service config), so they are transparent,
bounded and backed off, and only for the idempotent inference and model calls.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_TARGET = "127.0.0.1:50051"


def channel_options(max_message_mb: float, retries: int) -> list[tuple[str, Any]]:
    """Message-size, keepalive and retry settings for the channel."""
    max_bytes = int(max_message_mb * 1024 * 1024)
    service_config = {
        "methodConfig": [
            {
                "name": [
                    {"service": "assay.v1.InferenceService"},
                    {"service": "assay.v1.ModelService"},
                ],
                "retryPolicy": {
                    "maxAttempts": max(2, min(retries + 1, 5)),
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.enable_retries", 1 if retries > 0 else 0),
    ]
    if retries > 0:
        options.append(("grpc.service_config", json.dumps(service_config)))
    return options
