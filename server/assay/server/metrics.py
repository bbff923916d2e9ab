"""Prometheus metrics, registered on an injected CollectorRegistry.

RPC metrics use the go-grpc-prometheus names so existing gRPC dashboards
work; assay's own series start with `assay_`. Labels stay low-cardinality:
model, backend, gRPC service/method/code.
"""

from __future__ import annotations

import functools
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from assay.server import __version__

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
OOD_TAIL_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
"""Holdout-tail buckets: the profile's holdout quantiles, expressed as ranks."""
AIGEN_SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""Probability buckets of assay_aigen_score (finer near both ends)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_MODEL = ("model",)


class ServerMetrics:
    """Every metric the server exports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Every series goes to the injected registry, never the global default one.
        counter = functools.partial(Counter, registry=registry)
        gauge = functools.partial(Gauge, registry=registry)
        histogram = functools.partial(Histogram, registry=registry)
        # Durations (base unit: seconds) all share one bucket layout.
        timer = functools.partial(histogram, buckets=LATENCY_BUCKETS_S)
        self.rpc_started = counter(
            "grpc_server_started_total", "RPCs started on the server.", _RPC_LABELS
        )
        self.rpc_handled = counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success.",
            (*_RPC_LABELS, "grpc_code"),
        )
        self.rpc_seconds = timer(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server, in seconds.",
            _RPC_LABELS,
        )
        self.msg_received = counter(
            "grpc_server_msg_received_total",
            "RPC stream messages received on the server.",
            _RPC_LABELS,
        )
        self.msg_sent = counter(
            "grpc_server_msg_sent_total", "RPC stream messages sent by the server.", _RPC_LABELS
        )
        self.batch_size = histogram(
            "assay_batch_size",
            "Rows (images) per batch sent to the backend.",
            _MODEL,
            buckets=BATCH_BUCKETS,
        )
        self.queue_depth = gauge(
            "assay_batch_queue_depth", "Images waiting in a model's batching queue.", _MODEL
        )
        self.inference_seconds = timer(
            "assay_backend_inference_seconds",
            "Backend time per batch, in seconds.",
            ("model", "backend"),
        )
        self.preprocess_seconds = timer(
            "assay_preprocess_seconds",
            "Decode + resize + normalise time per request, in seconds.",
            _MODEL,
        )
        self.images = counter(
            "assay_predicted_images_total", "Images predicted successfully.", _MODEL
        )
        self.ood_tail = histogram(
            "assay_ood_score",
            "OOD score of served images as the share of the profile's in-distribution holdout "
            "scoring at least as high (0 = beyond every holdout image).",
            ("model", "scorer"), buckets=OOD_TAIL_BUCKETS,
        )  # fmt: skip
        self.ood_flagged = counter(
            "assay_ood_flagged_total", "Served images flagged out-of-distribution.",
            ("model", "scorer"),
        )  # fmt: skip
        self.anomaly_flagged = counter(
            "assay_anomaly_flagged_total", "Images flagged anomalous (PatchCore).", _MODEL
        )
        self.aigen_score = histogram(
            "assay_aigen_score",
            "Pooled probability that a scored image is AI-generated, per detector.",
            ("detector",), buckets=AIGEN_SCORE_BUCKETS,
        )  # fmt: skip
        self.aigen_verdicts = counter(
            "assay_aigen_verdict_total",
            "Verdicts on scored images (GENERATED, REAL, UNSURE), per detector; "
            'several detectors together count as detector="ensemble".',
            ("detector", "verdict"),
        )
        self.model_ready = gauge(
            "assay_model_ready", "1 when the model's backend can serve, else 0.", _MODEL
        )
        self.store_up = gauge(
            "assay_store_up", "1 when the store (SQLite or PostgreSQL) answers, else 0."
        )
        build = gauge("assay_build_info", "assay version (value is always 1).", ("version",))
        build.labels(version=__version__).set(1)


class MetricsEndpoint:
    """The /metrics HTTP listener (prometheus_client's threaded WSGI server)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
