"""`assay aigen ...`: is this image AI-generated? Detect, calibrate, evaluate."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from assay.client import _cli_common as cli
from assay.client._aigen import DetectorProfileInfo, GeneratedVerdict
from assay.client._client import Client
from assay.client._jobs import Job, JobInfo

app = typer.Typer(no_args_is_help=True, help="AI-generated image detection.")
Detectors = Annotated[
    list[str] | None,
    typer.Option(
        "--detector", "-D", help="Detector (name or name:version); repeat for an ensemble."
    ),
]
Detector = Annotated[str, typer.Option("--detector", "-D", help="Detector (name or name:version).")]
_COLOURS = {"generated": "red", "real": "green", "unsure": "yellow"}


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "-"


def verdict_table(paths: list[Path], results: list[GeneratedVerdict], stability: bool) -> Table:
    """One row per image: verdict, probability, threshold and stability."""
    columns = ["image", "verdict", "probability", "threshold", "calibrated"]
    if stability:
        columns += ["flips", "flipped by"]
    shown = cli.table("AI-generated image detection", columns)
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
        shown.add_row(*row)
    return shown


def profile_table(profiles: list[DetectorProfileInfo]) -> Table:
    """Stored profiles with their held-out figures (compact: fits 80 columns)."""
    columns = ("detector", "threshold", "FPR", "TPR", "AP", "AUROC", "real/gen")
    shown = cli.table("detector profiles (FPR: target / held-out)", columns, right=columns[1:])
    for p in profiles:
        if p.problem:
            shown.add_row(f"{p.detector} v{p.version}", "[red]unreadable[/red]")
            continue
        spectrum = "" if p.spectral else " (no spectrum)"
        shown.add_row(
            f"{p.detector} v{p.version}{spectrum}",
            f"{p.threshold:.3g}",
            f"{_percent(p.target_fpr)} / {_percent(p.holdout_fpr)}",
            _percent(p.holdout_tpr),
            f"{p.holdout_ap:.3f}",
            f"{p.holdout_auroc:.3f}",
            f"{p.real_images}/{p.generated_images}",
        )
    return shown


def summary_table(report: Mapping[str, Any]) -> Table:
    """Overall and per-generator figures of an evaluation report."""
    calibration = report.get("calibration") or {}
    source = calibration.get("source")
    title = f"{report['detector']['name']} v{report['detector']['version']}: " + (
        "calibrated threshold" if source == "profile" else "0.5 rule (no profile)"
    )
    columns = ("set", "images", "AP", "AUROC", "accuracy", "accuracy @0.5")
    shown = cli.table(title, columns, right=columns[1:])

    def value(e: Any) -> str:
        v = (e or {}).get("value")
        if v is None:
            return "-"
        return f"{v:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    overall, counts = report["overall"], report["counts"]
    shown.add_row(
        "all",
        f"{counts['real']} real + {counts['generated']} generated",
        value(overall["ap"]),
        value(overall["auroc"]),
        value(overall["accuracy_calibrated"]),
        value(overall["accuracy_at_0_5"]),
    )
    shown.add_row(
        "real only",
        str(counts["real"]),
        "",
        "",
        value(overall["real_accuracy_calibrated"]),
        value(overall["real_accuracy_at_0_5"]),
    )
    for g in report.get("generators") or []:
        shown.add_row(
            f"generator {g['name']}",
            str(g["count"]),
            value(g["ap"]),
            value(g["auroc"]),
            value(g["accuracy_calibrated"]),
            value(g["accuracy_at_0_5"]),
        )
    return shown


def robustness_table(report: Mapping[str, Any]) -> Table:
    """AP and calibrated accuracy under JPEG re-saves and down-scaling."""
    shown = cli.table("robustness (all generators)", ("transform", "AP", "accuracy"))
    overall = report["overall"]
    shown.add_row(
        "none",
        f"{overall['ap']['value']:.3f}",
        f"{overall['accuracy_calibrated']['value']:.3f}",
    )
    curves = report.get("robustness") or {}
    for kind, label in (("jpeg", "JPEG q{}"), ("resize", "down-scale {}")):
        for point in curves.get(kind, []):
            ap = point["ap"]["value"]
            shown.add_row(
                label.format(point["param"]),
                "-" if ap is None else f"{ap:.3f}",
                f"{point['accuracy_calibrated']['value']:.3f}",
            )
    return shown


def _explain(paths: list[Path], results: list[GeneratedVerdict]) -> None:
    for file, r in zip(paths, results, strict=True):
        path = Path(file.parent.name) / file.name
        for d in r.detectors:
            if d.crops:
                top = sorted(d.crops, key=lambda c: -c.probability)[:3]
                crops = ", ".join(f"({c.top},{c.left}) {c.probability:.3f}" for c in top)
                cli.console.print(f"{path} · {d.detector}: {len(d.crops)} crops, highest {crops}")
        if r.spectral is not None:
            e = r.spectral
            state = "deviates from" if e.deviates else "is consistent with"
            cli.console.print(
                f"{path} · spectrum {state} the real photos "
                f"(score {e.score:.3g}, threshold {e.threshold:.3g}; evidence only)"
            )
        for note in r.notes:
            cli.console.print(f"{path} · [dim]{note}[/dim]")


@app.command()
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    detector: Detectors = None,
    stability: Annotated[
        bool, typer.Option("--stability", help="Re-score JPEG re-saves, down-scales and a blur.")
    ] = False,
    max_flip_fraction: Annotated[
        float | None,
        typer.Option(help="Tolerated share of flipped variants (default: the server's)."),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show crop scores, spectral evidence and notes.")
    ] = False,
    target: cli.Target = cli.DEFAULT_TARGET,
    as_json: cli.AsJson = False,
) -> None:
    """Is each image AI-generated? GENERATED / REAL, or UNSURE when re-encoding flips it."""
    with cli.connect(target) as client:
        results = client.detect_generated(
            images,
            detectors=detector or (),
            stability=stability,
            max_flip_fraction=max_flip_fraction,
            explain=explain,
        )
    if as_json:
        cli.console.print_json(json.dumps([asdict(r) for r in results]))
        return
    cli.console.print(verdict_table(images, results, stability))
    if explain:
        _explain(images, results)
    elif not all(r.calibrated for r in results):
        cli.err_console.print(
            "[yellow]note[/yellow] a detector has no profile, so the raw 0.5 rule decided; "
            "calibrate it with `assay aigen fit`"
        )


@app.command()
def fit(
    detector: Detector,
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", help="Labelled set: real/ and generated/ folders, or a manifest."
        ),
    ],
    target_fpr: Annotated[
        float | None, typer.Option(help="Maximum FPR on real images (default: the server's).")
    ] = None,
    holdout_fraction: Annotated[
        float | None, typer.Option(help="Share held out for checks (default: the server's).")
    ] = None,
    sample_limit: cli.SampleLimit = None,
    upload: cli.Upload = None,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Calibrate a detector's threshold at a target FPR on real images (a server job)."""

    def start(client: Client) -> Job:
        return client.fit_detector(
            detector,
            cli.dataset(client, data, upload),
            target_fpr=target_fpr,
            holdout_fraction=holdout_fraction,
            sample_limit=sample_limit,
        )

    def fitted(client: Client, job: JobInfo) -> list[DetectorProfileInfo]:
        return client.list_detector_profiles(detector.partition(":")[0])

    cli.console.print(profile_table(cli.run_job(target, "fit", start, fitted)))


@app.command()
def evaluate(
    detector: Detector,
    data: Annotated[
        Path,
        typer.Option("--data", "-d", help="Labelled set (manifest group column = generator)."),
    ],
    out: cli.Out = None,
    sample_limit: cli.SampleLimit = None,
    upload: cli.Upload = None,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """AP, AUROC and accuracy per generator and under re-encoding (a server job)."""
    report = cli.run_job(
        target,
        "evaluation",
        lambda client: client.evaluate_aigen_detector(
            detector, cli.dataset(client, data, upload), sample_limit=sample_limit
        ),
        cli.report_of,
    )
    cli.console.print(summary_table(report))
    cli.console.print(robustness_table(report))
    for warning in report.get("warnings") or []:
        cli.warn(warning)
    cli.write_report(report, out)


@app.command()
def profiles(
    detector: Annotated[str, typer.Argument(help="Only this detector's profiles.")] = "",
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """List stored detector profiles."""
    with cli.connect(target) as client:
        found = client.list_detector_profiles(detector)
    cli.console.print(profile_table(found))
    for p in found:
        if p.problem:
            cli.warn(
                f"the profile of {p.detector} v{p.version} cannot be used ({p.problem}); refit it "
                f"(assay aigen fit) or delete it (assay aigen delete-profile {p.detector} "
                f"--version {p.version})"
            )


@app.command("delete-profile")
def delete_profile(
    detector: Annotated[str, typer.Argument(help="Detector whose profile to delete.")],
    version: Annotated[
        str, typer.Option(help="The profile's detector version (default: the served one).")
    ] = "",
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Delete a detector's profile (its verdicts fall back to the raw 0.5 rule until a refit)."""
    with cli.connect(target) as client:
        deleted = client.delete_detector_profile(detector, version)
    cli.console.print(f"deleted the profile of {deleted.detector} v{deleted.version}", markup=False)
