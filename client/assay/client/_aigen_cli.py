"""`assay aigen ...`: is this image AI-generated? Detect, calibrate, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from assay.client import _evaluate_cli
from assay.client._aigen import DetectorProfileInfo, GeneratedVerdict
from assay.client._client import DEFAULT_TARGET, Client
from assay.client._errors import AssayClientError

console = Console()
err_console = Console(stderr=True)
app = typer.Typer(no_args_is_help=True, help="AI-generated image detection.")

Target = Annotated[str, typer.Option("--target", "-t", help="host:port of the assay server.")]
Detectors = Annotated[
    list[str] | None,
    typer.Option(
        "--detector", "-D", help="Detector (name or name:version); repeat for an ensemble."
    ),
]
_COLOURS = {"generated": "red", "real": "green", "unsure": "yellow"}


def _fail(exc: AssayClientError) -> None:
    err_console.print(f"[red]error[/red] {exc.code.name}: {exc.details}")
    raise typer.Exit(code=1)


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "-"


def verdict_table(paths: list[Path], results: list[GeneratedVerdict], stability: bool) -> Table:
    """One row per image: verdict, probability, threshold and stability."""
    table = Table(title="AI-generated image detection")
    columns = ["image", "verdict", "probability", "threshold", "calibrated"]
    table.add_column("image", overflow="fold")
    columns.remove("image")
    if stability:
        columns += ["flips", "flipped by"]
    for column in columns:
        table.add_column(column)
    for path, r in zip(paths, results, strict=True):
        colour = _COLOURS.get(r.verdict, "white")
        thresholds = ", ".join(f"{d.threshold:.3g}" for d in r.detectors)
        row = [
            f"{path.parent.name}/{path.name}",
            f"[{colour}]{r.verdict.upper()}[/{colour}]",
            f"{r.probability:.3f}",
            thresholds,
            "yes" if r.calibrated else "[yellow]no (0.5 rule)[/yellow]",
        ]
        if stability and r.stability is not None:
            flipped = [v.name for v in r.stability.variants if v.flipped]
            total = len(r.stability.variants)
            row += [f"{len(flipped)}/{total}", ", ".join(flipped) or "-"]
        table.add_row(*row)
    return table


def _explain(paths: list[Path], results: list[GeneratedVerdict]) -> None:
    for file, r in zip(paths, results, strict=True):
        path = Path(file.parent.name) / file.name
        for d in r.detectors:
            if d.crops:
                top = sorted(d.crops, key=lambda c: -c.probability)[:3]
                crops = ", ".join(f"({c.top},{c.left}) {c.probability:.3f}" for c in top)
                console.print(f"{path} · {d.detector}: {len(d.crops)} crops, highest {crops}")
        if r.spectral is not None:
            e = r.spectral
            state = "deviates from" if e.deviates else "is consistent with"
            console.print(
                f"{path} · spectrum {state} the real photos "
                f"(score {e.score:.3g}, threshold {e.threshold:.3g}; evidence only)"
            )
        for note in r.notes:
            console.print(f"{path} · [dim]{note}[/dim]")


@app.command()
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    detector: Detectors = None,
    stability: Annotated[
        bool, typer.Option("--stability", help="Re-score JPEG re-saves, down-scales and a blur.")
    ] = False,
    max_flip_fraction: Annotated[
        float | None, typer.Option(help="Tolerated share of flipped variants (default: server's).")
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show crop scores, spectral evidence and notes.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Is each image AI-generated? GENERATED / REAL, or UNSURE when re-encoding flips it."""
    try:
        with Client(target) as client:
            results = client.detect_generated(
                images,
                detectors=detector or (),
                stability=stability,
                max_flip_fraction=max_flip_fraction,
                explain=explain,
            )
    except AssayClientError as exc:
        _fail(exc)
    if as_json:
        from dataclasses import asdict

        console.print_json(json.dumps([asdict(r) for r in results]))
        return
    console.print(verdict_table(images, results, stability))
    if explain:
        _explain(images, results)
    elif not all(r.calibrated for r in results):
        err_console.print(
            "[yellow]note[/yellow] a detector has no profile, so the raw 0.5 rule decided; "
            "calibrate it with `assay aigen fit`"
        )


def profile_table(profiles: list[DetectorProfileInfo]) -> Table:
    """Stored profiles with their held-out figures (compact: fits 80 columns)."""
    table = Table(title="detector profiles (FPR: target / held-out)")
    table.add_column("detector", overflow="fold")
    for column in ("threshold", "FPR", "TPR", "AP", "AUROC", "real/gen"):
        table.add_column(column, justify="right")
    for p in profiles:
        spectrum = "" if p.spectral else " (no spectrum)"
        table.add_row(
            f"{p.detector} v{p.version}{spectrum}",
            f"{p.threshold:.3g}",
            f"{_percent(p.target_fpr)} / {_percent(p.holdout_fpr)}",
            _percent(p.holdout_tpr),
            f"{p.holdout_ap:.3f}",
            f"{p.holdout_auroc:.3f}",
            f"{p.real_images}/{p.generated_images}",
        )
    return table


def _dataset(client: Client, data: Path, upload: str | None) -> str:
    return client.upload_dataset(upload, data, replace=True) if upload else str(data.resolve())


@app.command()
def fit(
    detector: Annotated[str, typer.Option("--detector", "-D", help="Detector to calibrate.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", help="Labelled set: real/ and generated/ folders, or a manifest."
        ),
    ],
    target_fpr: Annotated[float, typer.Option(help="Maximum FPR on real images.")] = 0.05,
    holdout_fraction: Annotated[float, typer.Option(help="Share held out for checks.")] = 0.3,
    sample_limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    upload: Annotated[
        str | None, typer.Option(help="Upload the local --data folder under this name first.")
    ] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Calibrate a detector's threshold at a target FPR on real images (a server job)."""
    try:
        with Client(target) as client:
            job = client.fit_detector(
                detector,
                _dataset(client, data, upload),
                target_fpr=target_fpr,
                holdout_fraction=holdout_fraction,
                sample_limit=sample_limit,
            )
            _evaluate_cli.finished(client, job, "fit")
            name = detector.partition(":")[0]
            found = client.list_detector_profiles(name)
    except AssayClientError as exc:
        _fail(exc)
    console.print(profile_table(found))


def summary_table(report: dict[str, Any]) -> Table:
    """Overall and per-generator figures of an evaluation report."""
    calibration = report.get("calibration") or {}
    source = calibration.get("source")
    title = f"{report['detector']['name']} v{report['detector']['version']}: " + (
        "calibrated threshold" if source == "profile" else "0.5 rule (no profile)"
    )
    table = Table(title=title)
    for column in ("set", "images", "AP", "AUROC", "accuracy", "accuracy @0.5"):
        table.add_column(column, justify="right" if column != "set" else "left")

    def value(e: Any) -> str:
        v = (e or {}).get("value")
        if v is None:
            return "-"
        return f"{v:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    overall, counts = report["overall"], report["counts"]
    table.add_row(
        "all",
        f"{counts['real']} real + {counts['generated']} generated",
        value(overall["ap"]),
        value(overall["auroc"]),
        value(overall["accuracy_calibrated"]),
        value(overall["accuracy_at_0_5"]),
    )
    table.add_row(
        "real only",
        str(counts["real"]),
        "",
        "",
        value(overall["real_accuracy_calibrated"]),
        value(overall["real_accuracy_at_0_5"]),
    )
    for g in report.get("generators") or []:
        table.add_row(
            f"generator {g['name']}",
            str(g["count"]),
            value(g["ap"]),
            value(g["auroc"]),
            value(g["accuracy_calibrated"]),
            value(g["accuracy_at_0_5"]),
        )
    return table


def robustness_table(report: dict[str, Any]) -> Table:
    """AP and calibrated accuracy under JPEG re-saves and down-scaling."""
    table = Table(title="robustness (all generators)")
    for column in ("transform", "AP", "accuracy"):
        table.add_column(column)
    overall = report["overall"]
    table.add_row(
        "none",
        f"{overall['ap']['value']:.3f}",
        f"{overall['accuracy_calibrated']['value']:.3f}",
    )
    curves = report.get("robustness") or {}
    for kind, label in (("jpeg", "JPEG q{}"), ("resize", "down-scale {}")):
        for point in curves.get(kind, []):
            ap = point["ap"]["value"]
            table.add_row(
                label.format(point["param"]),
                "-" if ap is None else f"{ap:.3f}",
                f"{point['accuracy_calibrated']['value']:.3f}",
            )
    return table


def write_report(report: dict[str, Any], out: Path) -> None:
    """JSON for .json, else the HTML report (needs the report extra)."""
    if out.suffix == ".json":
        out.write_text(json.dumps(report, indent=2, sort_keys=True))
    else:
        from assay.client.aigen_report_html import write_aigen_html

        write_aigen_html(report, out)


@app.command()
def evaluate(
    detector: Annotated[str, typer.Option("--detector", "-D", help="Detector to evaluate.")],
    data: Annotated[
        Path,
        typer.Option("--data", "-d", help="Labelled set (manifest group column = generator)."),
    ],
    out: Annotated[
        Path | None, typer.Option(help="Write the report (.html with plots, or .json).")
    ] = None,
    sample_limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    upload: Annotated[
        str | None, typer.Option(help="Upload the local --data folder under this name first.")
    ] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """AP, AUROC and accuracy per generator and under re-encoding (a server job)."""
    try:
        with Client(target) as client:
            job = client.evaluate_aigen_detector(
                detector, _dataset(client, data, upload), sample_limit=sample_limit
            )
            job = _evaluate_cli.finished(client, job, "evaluation")
            report = client.get_report(job.id)
    except AssayClientError as exc:
        _fail(exc)
    console.print(summary_table(report))
    console.print(robustness_table(report))
    for warning in report.get("warnings") or []:
        err_console.print(f"[yellow]warning[/yellow] {warning}")
    if out is not None:
        try:
            write_report(report, out)
        except RuntimeError as exc:  # matplotlib missing: keep the JSON
            err_console.print(f"{exc}; writing JSON instead")
            out = out.with_suffix(".json")
            write_report(report, out)
        err_console.print(f"report written to {out}")


@app.command()
def profiles(
    detector: Annotated[str, typer.Argument(help="Only this detector's profiles.")] = "",
    target: Target = DEFAULT_TARGET,
) -> None:
    """List stored detector profiles."""
    try:
        with Client(target) as client:
            found = client.list_detector_profiles(detector)
    except AssayClientError as exc:
        _fail(exc)
    console.print(profile_table(found))
