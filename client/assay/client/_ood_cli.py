"""`assay ood ...` and `assay anomaly ...`: fit OOD profiles, score images, rank scorers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image
from rich.table import Table

from assay.client import _cli_common as cli
from assay.client._client import Client
from assay.client._jobs import Job

app = typer.Typer(no_args_is_help=True, help="Out-of-distribution profiles and scores.")
anomaly_app = typer.Typer(
    no_args_is_help=True, help="Anomaly detection with localisation (PatchCore)."
)
Images = Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)]


@app.command()
def fit(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to profile.")],
    data: Annotated[
        Path, typer.Option("--data", "-d", help="In-distribution images (folder or manifest).")
    ],
    scorers: Annotated[
        str | None, typer.Option(help="Comma-separated scorers (default: all the model allows).")
    ] = None,
    target_tpr: Annotated[
        float | None,
        typer.Option(help="Holdout share each threshold keeps (default: the server's)."),
    ] = None,
    sample_limit: cli.SampleLimit = None,
    upload: cli.Upload = None,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Fit the model's OOD profile (a server job) and show its thresholds."""

    def start(client: Client) -> Job:
        return client.fit_profile(
            model, cli.dataset(client, data, upload),
            scorers=scorers.split(",") if scorers else (),
            target_tpr=target_tpr, sample_limit=sample_limit,
        )  # fmt: skip

    (profile,) = cli.run_job(target, "fit", start, lambda client, _: client.list_profiles(model))
    # The TPR goes in the column header: in the title it would wrap over a table this narrow.
    title = f"OOD profile of {profile.model} v{profile.version}"
    column = f"threshold (TPR {profile.target_tpr:.0%})"
    shown = cli.table(title, ("scorer", column), right=(column,))
    for name, threshold in profile.thresholds.items():
        marker = " (default)" if name == profile.default_scorer else ""
        shown.add_row(name + marker, f"{threshold:.4g}")
    cli.console.print(shown)


@app.command()
def score(
    images: Images,
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose profile scores them.")],
    scorers: Annotated[
        str | None, typer.Option(help="Comma-separated scorers (default: the profile's).")
    ] = None,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Score images against the model's OOD profile."""
    with cli.connect(target) as client:
        results = client.score_ood(model, images, scorers=scorers.split(",") if scorers else ())
    columns = ("image", "scorer", "score", "threshold", "holdout tail", "verdict")
    shown = cli.table("OOD scores", columns)
    for path, verdicts in zip(images, results, strict=True):
        for v in verdicts:
            verdict = "[red]OOD[/red]" if v.is_ood else "[green]in-distribution[/green]"
            shown.add_row(
                path.name,
                v.scorer,
                f"{v.score:.4g}",
                f"{v.threshold:.4g}",
                f"{v.holdout_tail:.3f}",
                verdict,
            )
    cli.console.print(shown)


def _ranking_table(report: Mapping[str, Any]) -> Table:
    sets = list(report["ood_datasets"])
    columns = ["scorer", *(f"AUROC {name}" for name in sets), "mean AUROC", "mean FPR@95"]
    ranked = cli.table(
        f"OOD detectors for {report['model']['name']} (best first)", columns, right=columns[1:]
    )
    for row in report["ranking"]:
        scorer = row["scorer"]
        marker = " (recommended)" if scorer == report["recommended"] else ""
        cells = [f"{report['results'][scorer][n]['auroc']['value']:.3f}" for n in sets]
        ranked.add_row(
            scorer + marker, *cells, f"{row['mean_auroc']:.3f}", f"{row['mean_fpr_at_tpr']:.3f}"
        )
    return ranked


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
    out: cli.Out = None,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Rank the profile's scorers on your data (a server job) and recommend a default."""
    ood_sets = [str(p.resolve()) for p in ood_data]
    report = cli.run_job(
        target,
        "evaluation",
        lambda client: client.evaluate_ood_scorers(
            model, str(in_data.resolve()), ood_sets, sample_limit=sample_limit
        ),
        cli.report_of,
    )
    cli.console.print(_ranking_table(report))
    for name, warning in report["contamination"].items():
        cli.warn(f"OOD set {name}: {warning['message']}")
    cli.write_report(report, out)


@app.command()
def profiles(
    model: Annotated[str, typer.Argument(help="Only this model's profiles.")] = "",
    target: cli.Target = cli.DEFAULT_TARGET,
    as_json: cli.AsJson = False,
) -> None:
    """List stored OOD profiles."""
    with cli.connect(target) as client:
        found = client.list_profiles(model)
    if as_json:
        cli.console.print_json(json.dumps([asdict(p) for p in found]))
        return
    listed = cli.table("OOD profiles", ("model", "version", "default scorer", "scorers"))
    for p in found:
        scorers = ", ".join(p.thresholds) if not p.problem else "[red]unreadable (below)[/red]"
        listed.add_row(p.model, p.version, p.default_scorer or "-", scorers)
    cli.console.print(listed)
    for p in found:
        if p.problem:
            cli.warn(
                f"the profile of {p.model} v{p.version} cannot be used ({p.problem}); refit it "
                f"(assay ood fit) or delete it (assay ood delete-profile {p.model} "
                f"--version {p.version})"
            )


@app.command("delete-profile")
def delete_profile(
    model: Annotated[str, typer.Argument(help="Model whose profile to delete.")],
    version: Annotated[
        str, typer.Option(help="The profile's model version (default: the served one).")
    ] = "",
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Delete a model's OOD profile (its "ood" and "anomaly" signals stop until the next fit)."""
    with cli.connect(target) as client:
        deleted = client.delete_profile(model, version)
    what = deleted.problem or ", ".join(deleted.thresholds)
    cli.console.print(
        f"deleted the OOD profile of {deleted.model} v{deleted.version} ({what})", markup=False
    )


@anomaly_app.command("fit")
def anomaly_fit(
    model: Annotated[str, typer.Option("--model", "-m", help="Model with a feature_map output.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Normal (defect-free) images.")],
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Fit the PatchCore memory of the model's profile on normal images."""
    fit(
        model=model,
        data=data,
        scorers="patchcore",
        target_tpr=None,
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
    images: Images,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model whose PatchCore memory scores them.")
    ],
    out_dir: Annotated[Path | None, typer.Option(help="Write heat-map overlays here.")] = None,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Score images for anomalies; optionally write heat-map overlays."""
    with cli.connect(target) as client:
        results = client.detect_anomaly(model, images, with_maps=out_dir is not None)
    columns = ("image", "score", "threshold", "holdout tail", "verdict", "overlay")
    shown = cli.table("anomaly detection", columns)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for path, result in zip(images, results, strict=True):
        written = ""
        if out_dir is not None and result.map is not None:
            target_path = out_dir / f"{path.stem}_anomaly.png"
            overlay(path, result.map, result.threshold).save(target_path)
            written = str(target_path)
        verdict = "[red]anomalous[/red]" if result.is_anomalous else "[green]normal[/green]"
        shown.add_row(
            path.name,
            f"{result.score:.4g}",
            f"{result.threshold:.4g}",
            f"{result.holdout_tail:.3f}",
            verdict,
            written,
        )
    cli.console.print(shown)


def _anomaly_table(report: Mapping[str, Any]) -> Table:
    dataset = report["dataset"]
    defective = sum(dataset["defect"].values())
    title = f"anomaly detection by {report['model']['name']}"
    shown = cli.table(title, ("metric", "value"), right=("value",))
    pimo = list((report.get("aupimo") or {}).values())
    rows = [
        ("image AUROC", report["image_auroc"]),
        ("pixel AUROC", report["pixel_auroc"]),
        ("AUPRO (FPR <= 0.3)", report["aupro"]),
        (f"mean AUPIMO ({len(pimo)} images)", sum(pimo) / len(pimo) if pimo else None),
    ]
    shown.add_row("images (good, defective)", f"{dataset['good']}, {defective}")
    for name, value in rows:
        shown.add_row(name, "n/a (no masks)" if value is None else f"{value:.3f}")
    return shown


@anomaly_app.command("evaluate")
def anomaly_evaluate(
    model: Annotated[str, typer.Option("--model", "-m", help="Model with a PatchCore profile.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="MVTec-style folder: test/good, test/<defect>, optional ground_truth masks.",
        ),
    ],
    upload: cli.Upload = None,
    out: cli.Out = None,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Image AUROC and, with masks, pixel AUROC, AUPRO and AUPIMO (a server job)."""
    report = cli.run_job(
        target,
        "anomaly evaluation",
        lambda client: client.evaluate_anomaly(model, cli.dataset(client, data, upload)),
        cli.report_of,
    )
    cli.console.print(_anomaly_table(report))
    cli.write_report(report, out)
