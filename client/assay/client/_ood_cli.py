"""`assay ood ...`: fit OOD profiles, score images, list profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image
from rich.console import Console
from rich.table import Table

from assay.client import _evaluate_cli
from assay.client._client import DEFAULT_TARGET, Client
from assay.client._errors import AssayClientError

console = Console()
err_console = Console(stderr=True)
app = typer.Typer(no_args_is_help=True, help="Out-of-distribution profiles and scores.")

Target = Annotated[str, typer.Option("--target", "-t", help="host:port of the assay server.")]


def _fail(exc: AssayClientError) -> None:
    err_console.print(f"[red]error[/red] {exc.code.name}: {exc.details}")
    raise typer.Exit(code=1)


@app.command()
def fit(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to profile.")],
    data: Annotated[
        Path, typer.Option("--data", "-d", help="In-distribution images (folder or manifest).")
    ],
    scorers: Annotated[
        str | None, typer.Option(help="Comma-separated scorers (default: all the model allows).")
    ] = None,
    target_tpr: Annotated[float, typer.Option(help="Holdout share each threshold keeps.")] = 0.95,
    sample_limit: Annotated[
        int | None, typer.Option(help="At most this many reference images.")
    ] = None,
    upload: Annotated[
        str | None, typer.Option(help="Upload the local --data folder under this name first.")
    ] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Fit the model's OOD profile (a server job) and show its thresholds."""
    try:
        with Client(target) as client:
            dataset = (
                client.upload_dataset(upload, data, replace=True) if upload else str(data.resolve())
            )
            job = client.fit_profile(
                model, dataset, scorers=(scorers or "").split(",") if scorers else (),
                target_tpr=target_tpr, sample_limit=sample_limit,
            )  # fmt: skip
            job = _evaluate_cli.follow(client, job)
            if job.state != "succeeded":
                err_console.print(f"[red]fit {job.state}[/red]: {job.error}")
                raise typer.Exit(code=1)
            (profile,) = client.list_profiles(model)
    except AssayClientError as exc:
        _fail(exc)
    table = Table(
        title=f"OOD profile of {profile.model} v{profile.version} (TPR {profile.target_tpr:.0%})"
    )
    table.add_column("scorer")
    table.add_column("threshold", justify="right")
    for name, threshold in profile.thresholds.items():
        marker = " (default)" if name == profile.default_scorer else ""
        table.add_row(name + marker, f"{threshold:.4g}")
    console.print(table)


@app.command()
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose profile scores them.")],
    scorers: Annotated[
        str | None, typer.Option(help="Comma-separated scorers (default: the profile's).")
    ] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Score images against the model's OOD profile."""
    try:
        with Client(target) as client:
            results = client.score_ood(model, images, scorers=scorers.split(",") if scorers else ())
    except AssayClientError as exc:
        _fail(exc)
    table = Table(title="OOD scores")
    for column in ("image", "scorer", "score", "threshold", "holdout tail", "verdict"):
        table.add_column(column)
    for path, verdicts in zip(images, results, strict=True):
        for v in verdicts:
            verdict = "[red]OOD[/red]" if v.is_ood else "[green]in-distribution[/green]"
            table.add_row(
                path.name,
                v.scorer,
                f"{v.score:.4g}",
                f"{v.threshold:.4g}",
                f"{v.holdout_tail:.3f}",
                verdict,
            )
    console.print(table)


def _ranking_table(report: dict[str, Any]) -> Table:
    sets = list(report["ood_datasets"])
    table = Table(title=f"OOD detectors for {report['model']['name']} (best first)")
    table.add_column("scorer")
    for name in sets:
        table.add_column(f"AUROC {name}", justify="right")
    table.add_column("mean AUROC", justify="right")
    table.add_column("mean FPR@95", justify="right")
    for row in report["ranking"]:
        scorer = row["scorer"]
        marker = " (recommended)" if scorer == report["recommended"] else ""
        cells = [f"{report['results'][scorer][n]['auroc']['value']:.3f}" for n in sets]
        table.add_row(
            scorer + marker, *cells, f"{row['mean_auroc']:.3f}", f"{row['mean_fpr_at_tpr']:.3f}"
        )
    return table


@app.command()
def evaluate(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model whose profile's scorers to compare.")
    ],
    in_data: Annotated[
        Path, typer.Option("--id", help="In-distribution images (not the fit set).")
    ],
    ood_data: Annotated[list[Path], typer.Option("--ood", help="An OOD set; repeat for several.")],
    sample_limit: Annotated[
        int | None, typer.Option(help="At most this many images per set.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the report (.html with plots, or .json).")
    ] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Rank the profile's scorers on your data (a server job) and recommend a default."""
    try:
        with Client(target) as client:
            job = client.evaluate_ood_scorers(
                model,
                str(in_data.resolve()),
                [str(p.resolve()) for p in ood_data],
                sample_limit=sample_limit,
            )
            job = _evaluate_cli.follow(client, job)
            if job.state != "succeeded":
                err_console.print(f"[red]evaluation {job.state}[/red]: {job.error}")
                raise typer.Exit(code=1)
            report = client.get_report(job.id)
    except AssayClientError as exc:
        _fail(exc)
    console.print(_ranking_table(report))
    for name, warning in report["contamination"].items():
        err_console.print(f"[yellow]warning[/yellow] OOD set {name}: {warning['message']}")
    if out is not None:
        if out.suffix == ".json":
            out.write_text(json.dumps(report, indent=2, sort_keys=True))
        else:
            from assay.client.ood_report_html import write_ood_html

            write_ood_html(report, out)
        err_console.print(f"report written to {out}")


@app.command()
def profiles(
    model: Annotated[str, typer.Argument(help="Only this model's profiles.")] = "",
    target: Target = DEFAULT_TARGET,
) -> None:
    """List stored OOD profiles."""
    try:
        with Client(target) as client:
            found = client.list_profiles(model)
    except AssayClientError as exc:
        _fail(exc)
    table = Table(title="OOD profiles")
    for column in ("model", "version", "default scorer", "scorers"):
        table.add_column(column)
    for p in found:
        table.add_row(p.model, p.version, p.default_scorer, ", ".join(p.thresholds))
    console.print(table)


anomaly_app = typer.Typer(
    no_args_is_help=True, help="Anomaly detection with localisation (PatchCore)."
)


@anomaly_app.command("fit")
def anomaly_fit(
    model: Annotated[str, typer.Option("--model", "-m", help="Model with a feature_map output.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Normal (defect-free) images.")],
    target: Target = DEFAULT_TARGET,
) -> None:
    """Fit the PatchCore memory of the model's profile on normal images."""
    fit(
        model=model,
        data=data,
        scorers="patchcore",
        target_tpr=0.95,
        sample_limit=None,
        upload=None,
        target=target,
    )


def overlay(image_path: Path, heat: np.ndarray, threshold: float) -> Image.Image:
    """The image with its anomaly map in red (full red = twice the threshold)."""
    base = Image.open(image_path).convert("RGB")
    strength = np.clip(heat / max(threshold, 1e-12) / 2.0, 0.0, 1.0)
    alpha = Image.fromarray((strength * 255).astype(np.uint8)).resize(
        base.size, Image.Resampling.BILINEAR
    )
    red = Image.new("RGB", base.size, (255, 0, 0))
    return Image.composite(red, base, alpha.point(lambda v: int(v * 0.7)))


@anomaly_app.command("detect")
def anomaly_detect(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model whose PatchCore memory scores them.")
    ],
    out_dir: Annotated[Path | None, typer.Option(help="Write heat-map overlays here.")] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Score images for anomalies; optionally write heat-map overlays."""
    try:
        with Client(target) as client:
            results = client.detect_anomaly(model, images, with_maps=out_dir is not None)
    except AssayClientError as exc:
        _fail(exc)
    table = Table(title="anomaly detection")
    for column in ("image", "score", "threshold", "holdout tail", "verdict", "overlay"):
        table.add_column(column)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for path, result in zip(images, results, strict=True):
        written = ""
        if out_dir is not None and result.map is not None:
            target_path = out_dir / f"{path.stem}_anomaly.png"
            overlay(path, result.map, result.threshold).save(target_path)
            written = str(target_path)
        verdict = "[red]anomalous[/red]" if result.is_anomalous else "[green]normal[/green]"
        table.add_row(
            path.name,
            f"{result.score:.4g}",
            f"{result.threshold:.4g}",
            f"{result.holdout_tail:.3f}",
            verdict,
            written,
        )
    console.print(table)
