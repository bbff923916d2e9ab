"""`assay evaluate`, `assay jobs` and `assay report`: robustness suites from the shell."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from assay.client import _cli_common as cli
from assay.client._client import Client
from assay.client._html import finite_or_none, mapping
from assay.client._jobs import Job


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


def _interval_header(report: Mapping[str, Any]) -> str:
    """The value column's header, naming the confidence the report's intervals have."""
    level = finite_or_none(mapping(report["clean"]["error"]).get("confidence"))
    return "value [CI]" if level is None else f"value [{100 * level:g}% CI]"


def summary_table(report: Mapping[str, Any]) -> Table:
    """The headline numbers of a robustness report, with their intervals."""
    title = f"robustness of {report['model']['name']} ({report['dataset']['images']} images)"
    column = _interval_header(report)
    found = cli.table(title, ("metric", column), right=(column,))
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
        found.add_row(name, value)
    return found


def evaluate(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to evaluate.")],
    data: Annotated[
        Path,
        typer.Option("--data", "-d", help="ImageFolder or .jsonl/.csv manifest on the server."),
    ],
    suite: Annotated[
        str | None,
        typer.Option(help="Preset: quick, standard, adversarial (default: the server's)."),
    ] = None,
    baseline: Annotated[str | None, typer.Option(help="Baseline model for mCE.")] = None,
    corruptions: Annotated[str | None, typer.Option(help="Comma-separated corruptions.")] = None,
    severities: Annotated[
        str | None, typer.Option(help="Comma-separated severities (1-5).")
    ] = None,
    sample_limit: cli.SampleLimit = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every generated image.")] = None,
    upload: cli.Upload = None,
    out: cli.Out = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report JSON.")] = False,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Run a robustness suite as a server job, with live progress and a summary."""
    overrides: dict[str, Any] = {
        "corruptions": _csv(corruptions),
        "severities": _csv(severities, int),
        "sample_limit": sample_limit,
        "seed": seed,
    }

    def start(client: Client) -> Job:
        job = client.start_evaluation(
            model, cli.dataset(client, data, upload), suite, baseline=baseline,
            **{k: v for k, v in overrides.items() if v is not None},
        )  # fmt: skip
        cli.err_console.print(f"job {job.id}: {job.total} units")
        return job

    report = cli.run_job(target, "job", start, cli.report_of)
    cli.write_report(report, out)
    if as_json:
        cli.console.print_json(json.dumps(report.raw))
    else:
        cli.console.print(summary_table(report))


_JOB_ACTIONS = ("cancel", "delete")


def jobs(
    words: Annotated[
        list[str] | None,
        typer.Argument(
            help="ID shows one job; cancel ID cancels a live job (finished units are kept); "
            "delete ID deletes an ended job with its report.",
            metavar="ID | cancel ID | delete ID",
            show_default=False,
        ),
    ] = None,
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """List jobs (newest first), show one, cancel one or delete one."""
    action, job_id = _job_command(words or [])
    with cli.connect(target) as client:
        if action == "delete":
            deleted = client.delete_job(job_id)
            cli.console.print(f"deleted job {deleted.id} ({deleted.kind}, {deleted.state})")
            return
        if action == "cancel":
            found = [client.cancel_job(job_id)]
        else:
            found = [client.get_job(job_id)] if job_id else client.list_jobs()
    listed = cli.table("jobs", ("id", "kind", "state", "done", "stage", "error"))
    for j in found:
        listed.add_row(j.id, j.kind, j.state, f"{j.done}/{j.total}", j.stage, j.error)
    cli.console.print(listed)


def _job_command(words: list[str]) -> tuple[str, str]:
    """(action, job id) from `assay jobs` arguments; ("", "") lists every job."""
    if len(words) == 2 and words[0] in _JOB_ACTIONS:
        return words[0], words[1]
    if len(words) == 1 and words[0] not in _JOB_ACTIONS:
        return "", words[0]
    if not words:
        return "", ""
    raise typer.BadParameter(
        "expected nothing, a job id, `cancel ID` or `delete ID`", param_hint="'[ID]'"
    )


def report(
    job_id: Annotated[str, typer.Argument(help="A succeeded job.")],
    out: Annotated[Path, typer.Option(help="Output file (.html or .json).")] = Path("report.html"),
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Fetch a job's report and write it as HTML (with plots) or JSON."""
    with cli.connect(target) as client:
        document = client.get_report(job_id)
    cli.write_report(document, out)
