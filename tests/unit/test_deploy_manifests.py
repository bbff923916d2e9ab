"""The deployment files under deploy/: they parse, agree with each other and with assay itself."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from assay.server.metrics import ServerMetrics
from assay.server.settings import Settings, load_settings
from assay.server.store import default_url

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# Objects the operator creates once, outside the kustomization (the database password).
SETUP = sorted((K8S / "setup").glob("*.yaml"))
Doc = dict[str, Any]

# Every series assay exports (README, "Scrape metrics"), and real Triton series.
ASSAY_METRICS = {
    "grpc_server_started_total", "grpc_server_handled_total", "grpc_server_msg_received_total",
    "grpc_server_msg_sent_total", "assay_batch_queue_depth", "assay_predicted_images_total",
    "assay_model_ready", "assay_build_info", "assay_store_up", "assay_ood_flagged_total", "assay_anomaly_flagged_total",
    "assay_aigen_verdict_total",
    *(f"{histogram}_{suffix}" for suffix in ("bucket", "sum", "count") for histogram in (
        "grpc_server_handling_seconds", "assay_batch_size", "assay_backend_inference_seconds",
        "assay_preprocess_seconds", "assay_ood_score", "assay_aigen_score")),
}  # fmt: skip
TRITON_METRICS = {
    "nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success",
    "nv_inference_request_failure", "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us", "nv_gpu_utilization",
}  # fmt: skip
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "rate", "irate",
    "increase", "delta", "histogram_quantile", "clamp_min", "clamp_max", "abs", "absent",
    "max_over_time", "min_over_time", "avg_over_time", "by", "without", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric-like identifiers of a PromQL expression, minus functions, keywords and labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.findall(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr)
    return {w for w in words if w.lower() not in PROMQL_WORDS}


def load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def k8s(kind: str, name: str) -> Doc:
    docs = [d for p in MANIFESTS for d in load_all(p) if d["kind"] == kind]
    (doc,) = [d for d in docs if d["metadata"]["name"] == name]
    return doc


def pod(name: str, kind: str = "Deployment") -> Doc:
    return dict(k8s(kind, name)["spec"]["template"])


WORKLOADS = ("Deployment", "StatefulSet")


def port(container: Doc, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


COMPOSE = load_all(DEPLOY / "compose.yaml")[0]
DOCKERFILE = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")


@pytest.mark.parametrize(
    "path", [*MANIFESTS, *SETUP, K8S / "kustomization.yaml", DEPLOY / "compose.yaml"]
)
def test_yaml_parses(path: Path) -> None:
    assert load_all(path), f"{path} holds no document"


@pytest.mark.parametrize("path", [*MANIFESTS, *SETUP], ids=lambda p: p.name)
def test_k8s_objects_are_well_formed(path: Path) -> None:
    for doc in load_all(path):
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path
        expected = None if doc["kind"] == "Namespace" else "assay"
        assert doc["metadata"].get("namespace") == expected, path
        pod_spec = doc["spec"]["template"]["spec"] if doc["kind"] in WORKLOADS else {}
        for c in pod_spec.get("containers", []):
            assert c["image"] and c["resources"]["requests"], c["name"]
            assert c["readinessProbe"] and c["livenessProbe"], c["name"]
        for c in pod_spec.get("initContainers", []):
            assert c["image"] and c["resources"]["requests"] and c["resources"]["limits"], c["name"]


def test_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def test_assay_deployment_uses_native_grpc_probes_and_runs_unprivileged() -> None:
    (c,) = pod("assay")["spec"]["containers"]
    probes = {kind: c[f"{kind}Probe"]["grpc"] for kind in ("readiness", "liveness", "startup")}
    assert all(probe["port"] == port(c, "grpc") for probe in probes.values())
    assert probes["readiness"].get("service", "") == ""  # the whole server
    assert probes["liveness"]["service"] == "assay.v1.ModelService"  # Triton outage: no restart
    assert c["args"] == ["serve", "--config", "/etc/assay/assay.yaml"]
    security = {**pod("assay")["spec"]["securityContext"], **c["securityContext"]}
    assert security["runAsNonRoot"] and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"]
    annotations = pod("assay")["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port(c, "metrics")
    triton = pod("triton")["spec"]
    assert triton["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    claims = [v.get("persistentVolumeClaim", {}).get("claimName") for v in triton["volumes"]]
    assert "triton-models" in claims


def test_services_monitor_and_hpa_point_at_the_deployment() -> None:
    service, monitor = k8s("Service", "assay"), k8s("ServiceMonitor", "assay")
    (c,) = pod("assay")["spec"]["containers"]
    assert service["spec"]["selector"].items() <= pod("assay")["metadata"]["labels"].items()
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert service_ports == {"grpc": port(c, "grpc"), "metrics": port(c, "metrics")}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    hpa = k8s("HorizontalPodAutoscaler", "assay")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "assay"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert {p["port"] for p in k8s("Service", "triton")["spec"]["ports"]} == {8000, 8001, 8002}


@pytest.mark.parametrize(
    ("source", "url"), [("k8s", "triton.assay.svc:8001"), ("compose", "triton:8001")]
)
def test_settings_files_load_with_assays_loader(
    source: str, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("ASSAY_")]:
        monkeypatch.delenv(var)
    texts = {"compose": (DEPLOY / "examples/compose-assay.yaml").read_text(encoding="utf-8")}
    texts["k8s"] = k8s("ConfigMap", "assay-config")["data"]["assay.yaml"]
    (path := tmp_path / "assay.yaml").write_text(texts[source], encoding="utf-8")
    settings = load_settings(path)
    assert (settings.grpc.host, settings.metrics.host) == ("0.0.0.0", "0.0.0.0")
    assert [(m.name, m.backend.value) for m in settings.models] == [("digits_cnn", "triton")]
    assert (settings.models[0].triton.url or settings.triton.url) == url


def test_image_and_deployments_agree() -> None:
    for needed in ("FROM python:3.11-slim AS build", 'pip wheel --wheel-dir /wheels ".[postgres]"',
                   '"assay[postgres]"', "USER 10001", "EXPOSE 50051 9464", "--home-dir /nonexistent",
                   'CMD ["assay", "health"]', 'ENTRYPOINT ["assay"]',
                   'CMD ["serve", "--model-repository", "/opt/assay/models"]',
                   "COPY deploy/triton/model_repository /opt/assay/models",
                   "ASSAY_DATA__DIR=/var/lib/assay", "ORT_DISABLE_TELEMETRY=1",
                   'VOLUME ["/var/lib/assay"]',
                   "chown 10001:10001 /var/lib/assay"):  # fmt: skip
        assert needed in DOCKERFILE, needed
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, re.MULTILINE):
        assert (DEPLOY.parent / source).exists(), source
    # Deployments replace the default command with their own settings file, so the
    # bundled demo repository is not served beside (and clashing with) their models.
    (c,) = pod("assay")["spec"]["containers"]
    for args in (c["args"], COMPOSE["services"]["assay"]["command"]):
        assert args == ["serve", "--config", "/etc/assay/assay.yaml"]
    for env in (c.get("env", []), COMPOSE["services"]["assay"].get("environment", {})):
        assert "ASSAY_MODEL_REPOSITORY" not in str(env)


def test_compose_services_and_mounted_files_exist() -> None:
    services = COMPOSE["services"]
    assert {"triton", "assay", "prometheus", "grafana"} <= services.keys()
    build = services["assay"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    volumes = [v.split(":") for s in services.values() for v in s.get("volumes", [])]
    binds = {src: dst for src, dst, *_ in volumes if src.startswith(".")}  # not named volumes
    for src in binds:
        assert (DEPLOY / src).exists(), src
    prometheus = load_all(DEPLOY / "prometheus/prometheus.yml")[0]
    assert {f"/etc/prometheus/{rule}" for rule in prometheus["rule_files"]} <= {*binds.values()}
    assert {job["job_name"] for job in prometheus["scrape_configs"]} == {"assay", "triton"}
    providers = load_all(DEPLOY / "grafana/provisioning/dashboards/dashboards.yaml")[0]
    assert providers["providers"][0]["options"]["path"] in binds.values()
    assert "/etc/grafana/provisioning" in binds.values()


@pytest.mark.parametrize(
    "args", ["check config prometheus.yml", "check rules alerts.yml", "test rules alerts_test.yml"]
)
def test_promtool_accepts_prometheus_files(args: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH (make test installs Debian's prometheus package)"
    done = subprocess.run(
        [promtool, *args.split()], cwd=DEPLOY / "prometheus", capture_output=True, text=True
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_allow_list_is_what_assay_exports() -> None:
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    families = ServerMetrics(CollectorRegistry()).registry.collect()
    assert {f.name + s for f in families for s in suffixes[f.type]} == ASSAY_METRICS


def test_alerts_use_only_assay_metrics() -> None:
    groups = load_all(DEPLOY / "prometheus/alerts.yml")[0]["groups"]
    rules = [r for g in groups if g["name"] == "assay" for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "AssayModelNotReady", "AssayHighErrorRate", "AssayPredictLatencyHigh", "AssayQueueBacklog",
        "AssayStoreDown",
    }  # fmt: skip
    for rule in rules:
        assert rule["labels"]["severity"], rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
        assert metric_names(rule["expr"]) <= ASSAY_METRICS, rule["alert"]


def test_dashboard_is_valid_and_queries_only_real_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/assay.json").read_text(encoding="utf-8"))
    identity = (dashboard["uid"], dashboard["title"], dashboard["schemaVersion"])
    assert identity == ("assay-overview", "assay", 39)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    sources = load_all(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")[0]
    (datasource,) = sources["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    used: set[str] = set()
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat"} and panel["targets"], panel["title"]
        for holder in (panel, *panel["targets"]):
            assert holder["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and names <= ASSAY_METRICS | TRITON_METRICS, (panel["title"], names)
            used |= names
    assert {"assay_model_ready", "nv_inference_count", "nv_inference_exec_count"} <= used


def test_metric_names_keeps_metrics_only() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[$__rate_interval])))'
    assert metric_names(f"{expr} / on(job) group_left c:d > 1e3") == {"a_bucket", "c:d"}


# -- state: the store, the data folder and what references what ------------------------------

OTHER_ENV = {
    "PGPASSWORD",  # libpq's: the password stays out of the URL
    "ORT_DISABLE_TELEMETRY",  # onnxruntime's: no device id or event store under HOME
    "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
}  # fmt: skip
"""Variables the deployment files may set that are not assay settings."""


def workloads() -> list[Doc]:
    return [d for p in MANIFESTS for d in load_all(p) if d["kind"] in WORKLOADS]


def shipped(kind: str, paths: list[Path] = MANIFESTS) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for p in paths for d in load_all(p) if d["kind"] == kind}


def secret_value(name: str, key: str) -> str:
    secret = shipped("Secret", SETUP)[name]
    return str({**secret.get("data", {}), **secret.get("stringData", {})}[key])


def setting_exists(env_name: str) -> bool:
    """Whether ASSAY_A__B names the field a.b of the Settings model (unknown top-level
    names would be silently ignored by pydantic-settings, so walk the model instead)."""
    model: Any = Settings
    for part in env_name.removeprefix("ASSAY_").lower().split("__"):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return False
        if part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def test_every_referenced_claim_secret_and_config_map_is_shipped() -> None:
    claims, secrets, maps = (
        shipped("PersistentVolumeClaim"),
        shipped("Secret", SETUP),  # created once by the operator, see the next test
        shipped("ConfigMap"),
    )
    assert {"assay-data", "triton-models"} <= claims.keys()
    for doc in workloads():
        spec = doc["spec"]["template"]["spec"]
        templates = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for volume in spec.get("volumes", []):
            if claim := volume.get("persistentVolumeClaim"):
                assert claim["claimName"] in claims, (doc["metadata"]["name"], claim)
            if config := volume.get("configMap"):
                assert config["name"] in maps, (doc["metadata"]["name"], config)
            if secret := volume.get("secret"):
                assert secret["secretName"] in secrets, (doc["metadata"]["name"], secret)
        volumes = {v["name"] for v in spec.get("volumes", [])} | templates
        for c in spec.get("initContainers", []):
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes, c["name"]
        for c in spec["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= volumes, (c["name"], mounts - volumes)
            assert volumes <= mounts, (c["name"], volumes - mounts)  # nothing declared unused
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert secret_value(ref["name"], ref["key"]) is not None, (c["name"], ref)
    assert claims["assay-data"]["spec"]["accessModes"] == ["ReadWriteMany"]  # shared uploads


def container_env(c: Doc) -> dict[str, str]:
    """A container's environment with Secret references resolved from the shipped Secret."""
    env: dict[str, str] = {}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        env[e["name"]] = secret_value(ref["name"], ref["key"]) if ref else str(e["value"])
    return env


def dockerfile_env() -> dict[str, str]:
    pairs = [
        p for line in re.findall(r"^ENV (.+)$", DOCKERFILE, re.MULTILINE) for p in line.split()
    ]
    return dict(pair.split("=", 1) for pair in pairs)


def compose_env(service: str) -> dict[str, str]:
    env = COMPOSE["services"][service].get("environment", {})
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize("source", ["k8s", "compose", "dockerfile"])
def test_assay_environment_names_real_settings_and_keeps_the_password_out_of_the_url(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (c,) = pod("assay")["spec"]["containers"]
    env = {"k8s": lambda: container_env(c), "compose": lambda: compose_env("assay"),
           "dockerfile": dockerfile_env}[source]()  # fmt: skip
    for name in env:
        assert setting_exists(name) if name.startswith("ASSAY_") else name in OTHER_ENV, name
    for var in [v for v in os.environ if v.startswith("ASSAY_")]:
        monkeypatch.delenv(var)
    for name, value in env.items():
        if name.startswith("ASSAY_"):
            monkeypatch.setenv(name, value)
    settings = load_settings()  # every value must validate, too
    assert settings.data.dir == Path("/var/lib/assay")
    if source == "dockerfile":  # one container: SQLite in the data volume
        assert settings.data.url is None
        assert default_url(settings.data.dir) == "sqlite:////var/lib/assay/assay.sqlite3"
        return
    url = urlsplit(settings.data.url or "")
    assert (url.scheme, url.username, url.password, url.path) == (
        "postgresql",
        "assay",
        None,
        "/assay",
    )
    assert "PGPASSWORD" in env


def test_data_folder_is_the_one_writable_mount() -> None:
    spec = pod("assay")["spec"]
    (c,) = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = {
        m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"] if not m.get("readOnly")
    }
    assert writable.keys() == {"/var/lib/assay", "/tmp"}
    assert writable["/var/lib/assay"]["persistentVolumeClaim"]["claimName"] == "assay-data"
    assert "emptyDir" in writable["/tmp"]
    assert container_env(c)["ASSAY_DATA__DIR"] == dockerfile_env()["ASSAY_DATA__DIR"]
    compose_mounts = {
        v.split(":")[1]: v.split(":")[0] for v in COMPOSE["services"]["assay"]["volumes"]
    }
    assert compose_mounts["/var/lib/assay"] == "assay-data"
    assert {"assay-data", "postgres-data"} <= COMPOSE["volumes"].keys()


def test_bundled_postgres_serves_the_url_in_the_secret() -> None:
    url = urlsplit(secret_value("assay-postgres", "url"))
    statefulset, service = k8s("StatefulSet", "postgres"), k8s("Service", "postgres")
    assert (url.hostname, url.port) == ("postgres.assay.svc", 5432)
    assert service["spec"]["ports"][0]["port"] == url.port
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    labels = pod("postgres", "StatefulSet")["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (c,) = pod("postgres", "StatefulSet")["spec"]["containers"]
    assert c["image"].startswith("postgres:15")
    env = {e["name"]: e for e in c["env"]}
    assert env["POSTGRES_USER"]["value"] == url.username and env["POSTGRES_DB"]["value"] == "assay"
    ref = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("assay-postgres", "password")
    assert secret_value("assay-postgres", "password") == ""  # no default password in git
    assert "pg_isready" in c["readinessProbe"]["exec"]["command"]


def test_compose_ships_postgres_and_binds_ports_to_localhost() -> None:
    services = COMPOSE["services"]
    postgres, assay = services["postgres"], services["assay"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert [v.split(":")[0] for v in postgres["volumes"]] == ["postgres-data"]
    assert assay["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = urlsplit(compose_env("assay")["ASSAY_DATA__URL"])
    assert (url.hostname, url.port, url.password) == ("postgres", 5432, None)
    # The password comes from the caller's environment or deploy/.env, never from git.
    password = re.compile(r"^\$\{POSTGRES_PASSWORD:\?.+\}$")
    assert password.match(compose_env("assay")["PGPASSWORD"])
    assert password.match(compose_env("postgres")["POSTGRES_PASSWORD"])
    for name, service in services.items():
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), (name, published)
