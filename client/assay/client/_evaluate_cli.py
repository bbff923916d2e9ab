"""`assay evaluate`, `assay jobs` and `assay report`: robustness suites from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from assay.client._client import DEFAULT_TARGET, Client
from assay.client._errors import AssayClientError
from assay.client._jobs import Job

console = Console()
err_console = Console(stderr=True)

Target = Annotated[str, typer.Option("--target", "-t", help="host:port of the assay server.")]


def _csv(value: str | None, cast: type = str) -> list[Any] | None:
    return [cast(v.strip()) for v in value.split(",") if v.strip()] if value else None


def _fmt(estimate: dict[str, Any] | None, percent: bool = True) -> str:
    if not estimate or estimate.get("value") is None:
        return "n/a"
    scale, unit = (100, "%") if percent else (1, "")
    text = f"{estimate['value'] * scale:.1f}{unit}"
    if estimate.get("low") is not None:
        text += f" [{estimate['low'] * scale:.1f}, {estimate['high'] * scale:.1f}]"
    return text


def summary_table(report: dict[str, Any]) -> Table:
    """The headline numbers of a robustness report, with 95 % intervals."""
    table = Table(
        title=f"robustness of {report['model']['name']} ({report['dataset']['images']} images)"
    )
    table.add_column("metric")
    table.add_column("value [95% CI]", justify="right")
    calibration = report["clean"].get("calibration") or {}
    subgroups = report.get("subgroups") or {}
    rows = [
        ("clean error", _fmt(report["clean"]["error"])),
        ("mCE", _fmt(report.get("mce")) + ("" if report.get("mce") else " (no baseline)")),
        ("relative mCE", _fmt(report.get("relative_mce"))),
        ("mean flip rate", _fmt({"value": report.get("mean_flip_rate")})),
        ("shift consistency", _fmt(report.get("shift_consistency"))),
        ("ECE", _fmt(calibration.get("ece"))),
        ("worst-group accuracy", _fmt(subgroups.get("worst_accuracy"))),
    ]  # fmt: skip
    for name, attack in ((a["kind"], a) for a in report.get("attacks") or []):
        rows.append(
            (
                f"robust accuracy ({name}, eps={attack['epsilon']:.3g})",
                _fmt(attack["robust_accuracy"]),
            )
        )
    worst = sorted(report["corruptions"].items(), key=lambda kv: -kv[1]["mean_error"]["value"])[:5]
    rows += [(f"error under {name}", _fmt(entry["mean_error"])) for name, entry in worst]
    for name, value in rows:
        table.add_row(name, value)
    return table


def follow(client: Client, job: Job) -> Job:
    """Show a progress bar fed by WatchJob until the job ends; return its final state."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err_console) as bar:
        task = bar.add_task("starting", total=max(job.total, 1), rate="")
        for event in client.watch_job(job.id):
            job = event.job
            rate = f"{event.images_per_second:.0f} img/s" if event.images_per_second else ""
            bar.update(
                task,
                completed=job.done,
                total=max(job.total, 1),
                description=job.stage or job.state,
                rate=rate,
            )
    return job


def finished(client: Client, job: Job, what: str) -> Job:
    """Follow a job to its end; exit 1 naming `what` unless it succeeded."""
    job = follow(client, job)
    if job.state != "succeeded":
        err_console.print(f"[red]{what} {job.state}[/red]: {job.error}")
        raise typer.Exit(code=1)
    return job


def write_report(report: dict[str, Any], out: Path) -> None:
    """JSON for a .json path, else a self-contained HTML file with plots."""
    if out.suffix == ".json":
        out.write_text(json.dumps(report, indent=2, sort_keys=True))
    else:
        from assay.client.report_html import write_html

        write_html(report, out)
    err_console.print(f"report written to {out}")


def evaluate(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to evaluate.")],
    data: Annotated[
        Path,
        typer.Option("--data", "-d", help="ImageFolder or .jsonl/.csv manifest on the server."),
    ],
    suite: Annotated[str, typer.Option(help="Preset: quick, standard, adversarial.")] = "quick",
    baseline: Annotated[str | None, typer.Option(help="Baseline model for mCE.")] = None,
    corruptions: Annotated[str | None, typer.Option(help="Comma-separated corruptions.")] = None,
    severities: Annotated[
        str | None, typer.Option(help="Comma-separated severities (1-5).")
    ] = None,
    sample_limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every generated image.")] = None,
    upload: Annotated[
        str | None, typer.Option(help="Upload the local --data folder under this name first.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the report (.html with plots, or .json).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report JSON.")] = False,
    target: Target = DEFAULT_TARGET,
) -> None:
    """Run a robustness suite as a server job, with live progress and a summary."""
    overrides: dict[str, Any] = {
        "corruptions": _csv(corruptions),
        "severities": _csv(severities, int),
        "sample_limit": sample_limit,
        "seed": seed,
    }
    try:
        with Client(target) as client:
            dataset = str(data.resolve())
            if upload:
                dataset = client.upload_dataset(upload, data, replace=True)
                err_console.print(f"uploaded {data} to the server as {dataset}")
            job = client.start_evaluation(
                model, dataset, suite, baseline=baseline,
                **{k: v for k, v in overrides.items() if v is not None},
            )  # fmt: skip
            err_console.print(f"job {job.id}: {job.total} units")
            try:
                job = follow(client, job)
            except KeyboardInterrupt:
                client.cancel_job(job.id)
                err_console.print(f"cancelled job {job.id} (finished units are kept)")
                raise typer.Exit(code=130) from None
            if job.state != "succeeded":
                err_console.print(f"[red]job {job.state}[/red]: {job.error}")
                raise typer.Exit(code=1)
            report = client.get_report(job.id)
    except AssayClientError as exc:
        err_console.print(f"[red]error[/red] {exc.code.name}: {exc.details}")
        raise typer.Exit(code=1) from None
    if out is not None:
        write_report(report, out)
    if as_json:
        console.print_json(json.dumps(report))
    else:
        console.print(summary_table(report))


def jobs(
    job_id: Annotated[str | None, typer.Argument(help="Show only this job.")] = None,
    target: Target = DEFAULT_TARGET,
) -> None:
    """List jobs (newest first), or show one."""
    try:
        with Client(target) as client:
            found = [client.get_job(job_id)] if job_id else client.list_jobs()
    except AssayClientError as exc:
        err_console.print(f"[red]error[/red] {exc.code.name}: {exc.details}")
        raise typer.Exit(code=1) from None
    table = Table(title="jobs")
    for column in ("id", "kind", "state", "done", "stage", "error"):
        table.add_column(column)
    for j in found:
        table.add_row(j.id, j.kind, j.state, f"{j.done}/{j.total}", j.stage, j.error)
    console.print(table)


def report(
    job_id: Annotated[str, typer.Argument(help="A succeeded job.")],
    out: Annotated[Path, typer.Option(help="Output file (.html or .json).")] = Path("report.html"),
    target: Target = DEFAULT_TARGET,
) -> None:
    """Fetch a job's report and write it as HTML (with plots) or JSON."""
    try:
        with Client(target) as client:
            document = client.get_report(job_id)
    except AssayClientError as exc:
        err_console.print(f"[red]error[/red] {exc.code.name}: {exc.details}")
        raise typer.Exit(code=1) from None
    write_report(document, out)
