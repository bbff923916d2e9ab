"""`assay ood ...`: fit OOD profiles, score images, list profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
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
