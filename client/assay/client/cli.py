"""The `assay` command line: serve, models, predict, demo."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import track
from rich.table import Table

from assay.client import _aigen_cli, _datasets_cli, _evaluate_cli, _ood_cli
from assay.client import _cli_common as cli
from assay.client._client import Client
from assay.client._errors import NotFoundError
from assay.client._types import ModelInfo, Prediction

if TYPE_CHECKING:
    from assay.server.app import AssayServer

SAMPLES_DIR = Path(__file__).resolve().parents[3] / "deploy" / "samples"
"""Sample images shipped with a source checkout."""

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="assay: robustness, OOD and AI-generated image checks for served image models.",
)


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML or TOML settings file.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (grpc.host).")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port (grpc.port).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port.")] = None,
    model_repository: Annotated[
        Path | None, typer.Option(help="Folder of model dirs with assay.yaml manifests.")
    ] = None,
) -> None:
    """Serve the configured models (the bundled demo models by default)."""
    from assay.server.app import serve as run_server
    from assay.server.errors import AssayError, ConfigError
    from assay.server.settings import load_settings

    overrides: dict[str, Any] = {}
    if host is not None or port is not None:
        overrides["grpc"] = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if metrics_port is not None:
        overrides["metrics"] = {"port": metrics_port}
    if model_repository is not None:
        overrides["model_repository"] = model_repository
    try:
        settings = load_settings(config, **overrides)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        asyncio.run(run_server(settings))
    except ConfigError as exc:
        cli.err_console.print(f"[red]configuration error[/red]\n{exc}")
        raise typer.Exit(code=2) from None
    except AssayError as exc:  # at start: e.g. the store is unreachable or has a newer schema
        cli.err_console.print(f"[red]cannot start[/red] ({exc.code.name}): {escape(str(exc))}")
        raise typer.Exit(code=1) from None


def _models_table(models: Sequence[ModelInfo]) -> Table:
    columns = ("name", "version", "task", "backend", "input", "outputs", "classes", "ready")
    shown = cli.table("models", columns)
    for m in models:
        p = m.preprocessing
        shown.add_row(
            m.name,
            m.version,
            m.task,
            m.backend,
            f"{p.height}x{p.width} {p.color} {p.layout}",
            ", ".join(
                f"{o.name}{list(o.shape)}" + (f" ({o.role})" if o.role else "") for o in m.outputs
            ),
            str(len(m.labels)),
            "[green]yes[/green]" if m.ready else "[red]no[/red]",
        )
    return shown


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="Describe only this model.")] = None,
    target: cli.Target = cli.DEFAULT_TARGET,
    as_json: cli.AsJson = False,
) -> None:
    """List the served models, or describe one."""
    with cli.connect(target) as client:
        found = [client.get_model(name)] if name else client.list_models()
    if as_json:
        cli.console.print_json(json.dumps([asdict(m) for m in found]))
    else:
        cli.console.print(_models_table(found))


@app.command()
def health(
    target: cli.Target = cli.DEFAULT_TARGET,
    service: Annotated[
        str, typer.Option(help='Health name: "" (server), a service, or assay.model.NAME.')
    ] = "",
    timeout_s: Annotated[float, typer.Option(help="Deadline of the check.")] = 3.0,
) -> None:
    """Exit 0 when the gRPC health service reports SERVING (for container health checks)."""
    with cli.connect(target, timeout_s=timeout_s, retries=0) as client:
        try:
            serving = client.is_serving(service)
        except NotFoundError:
            cli.err_console.print(
                f"error NOT_FOUND: no health status named {service!r}", markup=False
            )
            raise typer.Exit(code=1) from None
    cli.console.print("SERVING" if serving else "NOT_SERVING")
    raise typer.Exit(code=0 if serving else 1)


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _predict_all(
    client: Client,
    model: str,
    images: Sequence[Path],
    top_k: int,
    batch: int,
    signals: Sequence[str] = (),
) -> list[Prediction]:
    results: list[Prediction] = []
    chunks = list(_chunks(images, batch))
    for chunk in track(
        chunks, description="predicting", console=cli.err_console, disable=len(chunks) < 2
    ):
        results.extend(client.predict(model, chunk, top_k=top_k, signals=signals))
    return results


def _ood_cell(result: Prediction) -> str:
    if not result.ood:
        return ""
    verdict = result.ood[0]
    label = "[red]OOD[/red]" if verdict.is_ood else "[green]ok[/green]"
    return f"{label} ({verdict.scorer}, tail {verdict.holdout_tail:.3f})"


def _predictions_table(images: Sequence[Path], results: Sequence[Prediction]) -> Table:
    with_ood = any(r.ood for r in results)
    with_aigen = any(r.aigen is not None for r in results)
    columns = ["image", "top-1", "p", "runners-up"]
    columns += (["OOD"] if with_ood else []) + (["AI-generated"] if with_aigen else [])
    shown = cli.table("predictions", columns, right=("p",))
    for path, result in zip(images, results, strict=True):
        ood = [_ood_cell(result)] if with_ood else []
        if with_aigen:
            verdict = result.aigen
            ood.append(f"{verdict.verdict} ({verdict.probability:.2f})" if verdict else "-")
        if not result.top_k:
            shown.add_row(path.name, "-", "-", "", *ood)
            continue
        first, *rest = result.top_k
        shown.add_row(
            path.name,
            first.label,
            f"{first.probability:.3f}",
            ", ".join(f"{c.label} {c.probability:.2f}" for c in rest),
            *ood,
        )
    return shown


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes per image.")] = 3,
    batch: Annotated[int, typer.Option(help="Images per request.")] = 32,
    signals: Annotated[
        str | None,
        typer.Option(help='Trust signals, comma-separated: "ood", "anomaly", "aigen".'),
    ] = None,
    target: cli.Target = cli.DEFAULT_TARGET,
    as_json: cli.AsJson = False,
) -> None:
    """Predict image files with a served model."""
    wanted = [s.strip() for s in signals.split(",") if s.strip()] if signals else []
    with cli.connect(target) as client:
        results = _predict_all(client, model, images, top_k, batch, wanted)
    if as_json:
        rows = [
            {
                "image": str(p),
                "top_k": [vars(c) for c in r.top_k],
                "ood": [vars(o) for o in r.ood],
                "aigen": asdict(r.aigen) if r.aigen is not None else None,
            }
            for p, r in zip(images, results, strict=True)
        ]
        cli.console.print_json(json.dumps(rows))
    else:
        cli.console.print(_predictions_table(images, results))


def _true_label(path: Path) -> str:
    return path.stem.split("_", 1)[0]


def _show_metrics(url: str) -> None:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    wanted = ("assay_batch_size_count", "assay_batch_size_sum", "grpc_server_handled_total{")
    lines = [
        line for line in text.splitlines() if line.startswith(wanted) and not line.endswith(" 0.0")
    ]
    cli.console.print("[bold]a few series from /metrics[/bold]")
    for line in lines[:8]:
        cli.console.print(f"  {line}")


@app.command()
def demo(
    samples: Annotated[Path, typer.Option(help="Folder of sample images.")] = SAMPLES_DIR,
    report: Annotated[
        Path, typer.Option(help="Where to write the robustness report (HTML).")
    ] = Path("assay-demo-report.html"),
    data_dir: Annotated[
        Path | None,
        typer.Option(help="The demo server's data folder (default: a fresh temporary folder)."),
    ] = None,
) -> None:
    """Start an in-process server on free ports and predict the sample images.

    The server gets its own data folder, so the demo never shares jobs or
    profiles with another server.
    """
    import tempfile

    from assay.client._background import BackgroundServer
    from assay.server.settings import load_settings

    with contextlib.ExitStack() as stack:
        folder = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory("-assay-demo")))
        settings = load_settings(grpc={"port": 0}, metrics={"port": 0}, data={"dir": str(folder)})
        _run_demo(stack.enter_context(BackgroundServer(settings)), samples, report)
    cli.console.print(_next_steps(data_dir), markup=False, soft_wrap=True)


_TEMPORARY = (
    "the demo's jobs and profiles were in a temporary folder, now deleted (--data-dir keeps them)"
)


def _next_steps(data_dir: Path | None) -> str:
    """What to try after the demo, and where (whether) its jobs and profiles were kept."""
    commands = (
        "next: `assay serve` in one terminal, then "
        "`assay predict --model digits_cnn IMAGE...`, "
        "`assay evaluate --model digits_cnn --data deploy/samples/digits_heldout --out r.html`, "
        "or `assay aigen fit --detector aigen_demo --data deploy/samples/aigen/fit.jsonl` "
        "and `assay aigen detect --stability IMAGE...`"
    )
    if data_dir is None:
        return f"{commands}\n{_TEMPORARY}"
    serve = f"ASSAY_DATA__DIR={data_dir} assay serve"
    return f"{commands}\nthe demo's jobs and profiles are in {data_dir} (`{serve}` serves them)"


def _run_demo(server: AssayServer, samples: Path, report: Path) -> None:
    """The demo's steps against a running background server."""
    target = f"127.0.0.1:{server.port}"
    metrics_url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    cli.console.print(f"assay is serving on [bold]{target}[/bold]; metrics at {metrics_url}")
    with Client(target) as client:
        served = client.list_models()
        cli.console.print(_models_table(served))
        digits = sorted((samples / "digits").glob("*.png"))
        if not digits:
            cli.err_console.print(f"no sample images under {samples / 'digits'}")
            raise typer.Exit(code=1)
        results = _predict_all(client, "digits_cnn", digits, 3, 4)
        cli.console.print(_predictions_table(digits, results))
        correct = sum(r.label == _true_label(p) for p, r in zip(digits, results, strict=True))
        cli.console.print(f"digits_cnn: {correct}/{len(digits)} sample digits correct")
        photos = sorted((samples / "photos").glob("*.jpg"))
        if photos and any(m.name == "efficientnet_lite0" for m in served):
            results = _predict_all(client, "efficientnet_lite0", photos, 3, 4)
            cli.console.print(_predictions_table(photos, results))
        elif not any(m.name == "efficientnet_lite0" for m in served):
            cli.console.print("efficientnet_lite0 is not built (`make models` builds it); skipped")
        _demo_robustness(client, samples / "digits_heldout", report)
        if any(m.name == "aigen_demo" for m in served):
            _demo_aigen(client, samples / "aigen", report.with_name("assay-aigen-report.html"))
    _show_metrics(metrics_url)


def _demo_robustness(client: Client, data: Path, out: Path) -> None:
    """The quick robustness suite on the held-out digits, as a job, with its report."""
    cli.console.print(f"[bold]quick robustness suite[/bold] on {data}")
    job = client.start_evaluation("digits_cnn", str(data.resolve()), "quick")
    document = cli.job_report(client, job, "suite")
    cli.console.print(_evaluate_cli.summary_table(document))
    cli.write_report(document, out)


def _demo_aigen(client: Client, data: Path, out: Path) -> None:
    """Calibrate the demo detector, detect with stability, evaluate across generators."""
    cli.console.print(f"[bold]AI-generated image detection[/bold] with aigen_demo on {data}")
    job = client.fit_detector("aigen_demo", str(data / "fit.jsonl"))
    cli.follow_job(client, job, "detector fit")
    cli.console.print(_aigen_cli.profile_table(client.list_detector_profiles("aigen_demo")))
    groups = [sorted((data / "eval" / g).glob("*.png")) for g in ("real", "gen_a", "gen_b")]
    images = [files[i] for i in (0, 30) for files in groups]
    verdicts = client.detect_generated(images, stability=True)
    cli.console.print(_aigen_cli.verdict_table(images, verdicts, stability=True))
    job = client.evaluate_aigen_detector("aigen_demo", str(data / "eval.jsonl"))
    document = cli.job_report(client, job, "detector evaluation")
    cli.console.print(_aigen_cli.summary_table(document))
    cli.write_report(document, out)


app.command()(_evaluate_cli.evaluate)
app.add_typer(_ood_cli.app, name="ood")
app.add_typer(_ood_cli.anomaly_app, name="anomaly")
app.add_typer(_aigen_cli.app, name="aigen")
app.add_typer(_datasets_cli.app, name="datasets")
app.command()(_evaluate_cli.jobs)
app.command()(_evaluate_cli.report)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=list(argv) if argv is not None else sys.argv[1:], prog_name="assay")
