"""Server lifecycle: build the gRPC server, serve until a signal, drain, stop.

`create_server` binds (port 0 allowed) and wires everything; `serve` runs it
until SIGTERM/SIGINT and then drains in-flight calls for the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from assay.server.aigen.detection import AigenDetectors
from assay.server.aigen.evaluate_job import DetectorEvaluationJobs
from assay.server.aigen.fit_job import DetectorFits
from assay.server.aigen.profiles import DETECTOR_PROFILES
from assay.server.datadir import ensure_data_dir
from assay.server.dataset_catalog import UploadedDatasets
from assay.server.datasets import DatasetImages, DatasetRoots
from assay.server.inference import Predictor
from assay.server.jobs.manager import JobKind, JobManager
from assay.server.metrics import MetricsEndpoint, ServerMetrics
from assay.server.models.loading import build_registry
from assay.server.models.registry import ModelRegistry
from assay.server.ood.anomaly_job import AnomalyEvaluations
from assay.server.ood.evaluate_job import OodScorerEvaluations
from assay.server.ood.profiles import OOD_PROFILES
from assay.server.ood.service import OodProfiles
from assay.server.profiles import ProfileFormat, ProfileStore
from assay.server.profiles.legacy import import_legacy
from assay.server.profiles.refresh import ProfileRefresher
from assay.server.readiness import StoreProbe
from assay.server.robustness.evaluation import RobustnessJobs
from assay.server.robustness.generation import CorruptionWorkers
from assay.server.services.aigen import AigenServicer
from assay.server.services.datasets import DatasetServicer
from assay.server.services.inference import InferenceServicer
from assay.server.services.interceptors import ErrorMappingInterceptor, MetricsInterceptor
from assay.server.services.jobs import JobServicer
from assay.server.services.models import ModelServicer
from assay.server.services.ood import OodServicer
from assay.server.services.reflection import enable_reflection
from assay.server.services.robustness import RobustnessServicer
from assay.server.settings import Settings
from assay.server.store import default_url, open_store
from assay.v1 import (
    aigen_pb2,
    aigen_pb2_grpc,
    datasets_pb2,
    datasets_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    ood_pb2,
    ood_pb2_grpc,
    robustness_pb2,
    robustness_pb2_grpc,
)

log = logging.getLogger(__name__)

DEFAULT_REPOSITORY = Path(__file__).resolve().parents[3] / "deploy" / "triton" / "model_repository"
"""The committed demo models, when running from a source checkout."""
DEFAULT_DATA_ROOT = DEFAULT_REPOSITORY.parents[1] / "samples"
"""The committed sample datasets, when running from a source checkout."""

SERVICES = (
    inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    robustness_pb2.DESCRIPTOR.services_by_name["RobustnessService"].full_name,
    datasets_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name,
    ood_pb2.DESCRIPTOR.services_by_name["OodService"].full_name,
    aigen_pb2.DESCRIPTOR.services_by_name["AigenService"].full_name,
)
READINESS_POLL_S = 1.0

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def model_health_name(model: str) -> str:
    """Health-service name that reports one model's readiness."""
    return f"assay.model.{model}"


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments shared by the server (message size, keepalive)."""
    max_bytes = int(settings.grpc.max_message_mb * 1024 * 1024)
    return [
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.keepalive_time_ms", int(settings.grpc.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.grpc.keepalive_timeout_s * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


@dataclass
class AssayServer:
    """A wired, bound server; `start()` it, then `stop()` it."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    registry: ModelRegistry
    health: health.aio.HealthServicer
    metrics: ServerMetrics
    preprocess_pool: ThreadPoolExecutor
    jobs: JobManager
    workers: CorruptionWorkers
    store_probe: StoreProbe
    metrics_endpoint: MetricsEndpoint | None = None
    uploads: UploadedDatasets | None = None
    profile_refresher: ProfileRefresher | None = None
    _watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def metrics_port(self) -> int | None:
        """Port of /metrics, or None when metrics are disabled."""
        return self.metrics_endpoint.port if self.metrics_endpoint else None

    async def start(self) -> None:
        """Start serving and report health."""
        if self.uploads is not None:
            await self.uploads.start()  # sweep what crashed uploads left, before any new one
        await self.server.start()
        self.workers.warm()
        await self.jobs.begin()  # takes over jobs whose lease is free, then keeps looking
        await self.publish_health()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_readiness())
        if self.profile_refresher is not None:
            self.profile_refresher.start()
        log.info("assay listening on %s:%d", self.settings.grpc.host, self.port)

    async def publish_health(self) -> None:
        """Report the models' readiness (health + assay_model_ready), the store's, the services'.

        While the store does not answer, the server ("") and every service that
        needs it are NOT_SERVING. ModelService needs neither store nor model: it
        stays SERVING as the liveness name, since a restart brings neither back.
        """
        store_up = await self.store_probe.check()
        ready = {m.name: m.ready() for m in self.registry.all()}
        for name, is_ready in ready.items():
            self.metrics.model_ready.labels(model=name).set(1 if is_ready else 0)
            await self.health.set(model_health_name(name), _SERVING if is_ready else _NOT_SERVING)
        any_ready = _SERVING if store_up and any(ready.values()) else _NOT_SERVING
        stored = _SERVING if store_up else _NOT_SERVING
        no_model = {SERVICES[1]: _SERVING, SERVICES[2]: stored, SERVICES[4]: stored}
        for service in SERVICES:
            await self.health.set(service, no_model.get(service, any_ready))
        await self.health.set("", any_ready)

    async def _watch_readiness(self) -> None:
        while True:
            await asyncio.sleep(READINESS_POLL_S)
            await self.publish_health()

    async def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish for grace_s, then release everything."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.profile_refresher is not None:
            await self.profile_refresher.stop()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grpc.grace_period_s if grace_s is None else grace_s)
        await self.jobs.aclose()  # running jobs stay RUNNING, their leases released for takeover
        if self.uploads is not None:
            await self.uploads.aclose()
        self.workers.close()
        await self.store_probe.aclose()
        self.jobs.store.close()
        await self.registry.aclose()
        self.preprocess_pool.shutdown(wait=False, cancel_futures=True)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()


async def create_server(
    settings: Settings,
    *,
    metrics_registry: CollectorRegistry | None = None,
    default_repository: Path | None = DEFAULT_REPOSITORY,
) -> AssayServer:
    """Load the models and bind the server (port 0 picks a free port); does not start it."""
    ensure_data_dir(settings.data)  # first: an unwritable folder stops here with one clear line
    # First, so that an unreachable store fails the start before anything needs cleaning
    # up; opening may wait for PostgreSQL (up to connect_timeout_s) and migrate: off the loop.
    store = await asyncio.to_thread(
        open_store,
        settings.data.url or default_url(settings.data.dir),
        pool_max=settings.data.pool_max,
        connect_timeout_s=settings.data.connect_timeout_s,
    )
    metrics = ServerMetrics(metrics_registry or CollectorRegistry())
    registry = await build_registry(settings, metrics, default_repository)
    pool = ThreadPoolExecutor(settings.images.preprocess_workers, thread_name_prefix="preprocess")
    workers = CorruptionWorkers(settings.jobs.workers)
    uploads = settings.data.dir / "datasets"
    uploads.mkdir(parents=True, exist_ok=True)
    roots = DatasetRoots([*(settings.data.roots or [DEFAULT_DATA_ROOT]), uploads])
    data = DatasetImages(roots, pool, settings.images.max_pixels)
    evaluations = RobustnessJobs(
        registry,
        roots,
        pool,
        workers,
        max_pixels=settings.images.max_pixels,
        inline_max_images=settings.jobs.inline_max_images,
    )
    ood_profiles = ProfileStore(store, OOD_PROFILES)
    detector_profiles = ProfileStore(store, DETECTOR_PROFILES)
    d = settings.data.dir
    legacy: dict[Path, ProfileFormat[Any]] = {
        d / "profiles": OOD_PROFILES,
        d / "aigen_profiles": DETECTOR_PROFILES,
    }
    await asyncio.to_thread(import_legacy, store, legacy)  # older servers' files, once
    profiles = OodProfiles(registry, data, ood_profiles)
    detectors = AigenDetectors(
        registry, pool, detector_profiles, settings.aigen, settings.images.max_pixels
    )
    predictor = Predictor(registry, settings.images, pool, profiles, detectors)
    kinds: dict[str, JobKind[Any]] = {
        RobustnessJobs.kind: evaluations,
        OodProfiles.kind: profiles,
        OodScorerEvaluations.kind: OodScorerEvaluations(profiles),
        AnomalyEvaluations.kind: AnomalyEvaluations(profiles),
        DetectorFits.kind: DetectorFits(registry, data, detectors),
        DetectorEvaluationJobs.kind: DetectorEvaluationJobs(registry, data, detectors),
    }
    max_upload = int(settings.data.max_upload_mb * 1024 * 1024)
    datasets = UploadedDatasets(uploads, store, max_upload)
    jobs = JobManager(store, kinds, settings.jobs, pin=datasets.pin)  # jobs keep their version

    server = grpc.aio.server(
        interceptors=[MetricsInterceptor(metrics), ErrorMappingInterceptor()],
        options=grpc_options(settings),
        maximum_concurrent_rpcs=settings.grpc.max_concurrent_rpcs,
    )
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(predictor), server)
    models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry), server)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(jobs), server)
    ood_pb2_grpc.add_OodServiceServicer_to_server(OodServicer(jobs, profiles), server)
    aigen_pb2_grpc.add_AigenServiceServicer_to_server(AigenServicer(jobs, detectors), server)
    datasets_pb2_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(datasets), server)
    robustness_pb2_grpc.add_RobustnessServiceServicer_to_server(
        RobustnessServicer(jobs, evaluations), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICES, *(model_health_name(m.name) for m in registry.all())):
        await health_servicer.set(name, _NOT_SERVING)
    enable_reflection(
        server, (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    )
    port = server.add_insecure_port(f"{settings.grpc.host}:{settings.grpc.port}")
    if port == 0:
        raise OSError(f"cannot bind {settings.grpc.host}:{settings.grpc.port}")
    endpoint = None
    if settings.metrics.enabled:
        endpoint = MetricsEndpoint(metrics.registry, settings.metrics.host, settings.metrics.port)
    probe = StoreProbe(store.ping, store.url, settings.data.connect_timeout_s, metrics.store_up)
    refresher = ProfileRefresher([ood_profiles, detector_profiles], settings.data.profile_refresh_s)
    return AssayServer(
        settings, server, port, registry, health_servicer, metrics, pool, jobs, workers, probe,
        metrics_endpoint=endpoint, uploads=datasets, profile_refresher=refresher,
    )  # fmt: skip


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and stop."""
    app = await create_server(settings)
    await app.start()
    if app.metrics_endpoint is not None:
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, app.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info(
        "shutting down; draining in-flight calls for up to %.1fs", settings.grpc.grace_period_s
    )
    await app.stop()
