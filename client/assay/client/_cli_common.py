"""What every `assay` command shares: options, consoles, tables, errors, jobs and reports.

One place for the behaviour a user relies on in every command: a server error
prints its status code and exits 1 (`connect`); Ctrl-C while a job runs
cancels the job on the server and exits 130 (`follow_job`); a report is
written as HTML when matplotlib is there and as JSON when it is not
(`write_report`); and tables wrap long cells rather than cutting them with "…",
so they stay whole in logs and CI output (`table`), where the console is also
wider than a terminal's 80 columns unless COLUMNS says otherwise.

The SDK has no TLS options yet (`Client` opens an insecure channel), so the
only connection option is ``--target``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from assay.client import _html
from assay.client._channel import DEFAULT_TARGET
from assay.client._client import Client
from assay.client._errors import AssayClientError, FailedPreconditionError
from assay.client._jobs import JobInfo, JobState
from assay.client._report import Report

__all__ = [
    "DEFAULT_TARGET",
    "AsJson",
    "Out",
    "SampleLimit",
    "Target",
    "Upload",
    "connect",
    "console",
    "dataset",
    "err_console",
    "fail",
    "follow_job",
    "job_report",
    "report_of",
    "run_job",
    "table",
    "warn",
    "write_report",
]

T = TypeVar("T")

LOG_WIDTH = 160
"""Console width where the output is no terminal and COLUMNS is unset (a log, a CI job)."""


def _width(stream: TextIO | None) -> int | None:
    """LOG_WIDTH for a log without COLUMNS, else None (rich asks the terminal or COLUMNS)."""
    terminal = stream is not None and stream.isatty()
    return None if "COLUMNS" in os.environ or terminal else LOG_WIDTH


console = Console(width=_width(sys.stdout))
"""Results (tables, JSON) on stdout."""
err_console = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))
"""Progress, warnings and errors on stderr, so stdout stays parseable; a message stays one line."""

Target = Annotated[str, typer.Option("--target", "-t", help="host:port of the assay server.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Out = Annotated[Path | None, typer.Option(help="Write the report (.html with plots, or .json).")]
SampleLimit = Annotated[int | None, typer.Option(help="At most this many images.")]
Upload = Annotated[
    str | None, typer.Option(help="Upload the local --data folder under this name first.")
]


def fail(exc: AssayClientError) -> NoReturn:
    """Print a server error as "error CODE: details" and exit 1."""
    err_console.print(f"[red]error[/red] {exc.code.name}: {escape(exc.details)}")
    raise typer.Exit(code=1)


@contextmanager
def connect(target: str, **options: Any) -> Iterator[Client]:
    """A `Client` for one command; any server error inside the block ends it via `fail`."""
    try:
        with Client(target, **options) as client:
            yield client
    except AssayClientError as exc:
        fail(exc)


def dataset(client: Client, data: Path, upload: str | None) -> str:
    """The server-side dataset: `data` uploaded under `upload`, else its absolute path."""
    if not upload:
        return str(data.resolve())
    name = client.upload_dataset(upload, data, replace=True)
    err_console.print(escape(f"uploaded {data} to the server as {name}"))
    return name


def table(title: str, columns: Sequence[str], right: Sequence[str] = ()) -> Table:
    """A table whose cells wrap (folding words longer than the column), never cut with "…".

    Args:
        title: Shown above the table.
        columns: Column headers, in order.
        right: The headers of the right-aligned (numeric) columns.
    """
    found = Table(title=title)
    for column in columns:
        found.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return found


def _watch(client: Client, job: JobInfo) -> JobInfo:
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


def _interrupted(client: Client, job: JobInfo, what: str) -> NoReturn:
    """Ctrl-C: cancel the job unless it ended meanwhile, say which, and exit 130.

    A job that ended between the last progress event and the cancel is not an
    error (the server answers FAILED_PRECONDITION, or the finished job); nor is
    a cancel the server cannot take: the user asked to stop, so it is still 130.
    """
    try:
        ended: JobInfo | None = client.cancel_job(job.id)
    except FailedPreconditionError:
        ended = None
    except AssayClientError as exc:
        warn(f"could not cancel job {job.id} ({exc.code.name}: {exc.details}); it may still run")
        raise typer.Exit(code=130) from None
    if ended is not None and ended.state is JobState.CANCELLED:
        err_console.print(f"cancelled {what} (job {job.id}; finished units are kept)")
    else:
        state = f" ({ended.state})" if ended is not None else ""
        err_console.print(f"interrupted; {what} (job {job.id}) had already ended{state}")
    raise typer.Exit(code=130)


def follow_job(client: Client, job: JobInfo, what: str) -> JobInfo:
    """Follow a job to its end with a progress bar; the succeeded job, else exit.

    Ctrl-C cancels the job on the server (finished units are kept) and exits 130,
    also when the job had just ended (see `_interrupted`); a job that fails or is
    cancelled elsewhere exits 1 naming `what`.
    """
    try:
        job = _watch(client, job)
    except KeyboardInterrupt:
        _interrupted(client, job, what)
    if job.state is not JobState.SUCCEEDED:
        err_console.print(f"[red]{what} {job.state}[/red]: {escape(str(job.error))}")
        raise typer.Exit(code=1)
    return job


def job_report(client: Client, job: JobInfo, what: str) -> Report:
    """Follow a job (see `follow_job`) and return its report."""
    return client.get_report(follow_job(client, job, what).id)


def report_of(client: Client, job: JobInfo) -> Report:
    """The report of a finished job (the usual `result` of `run_job`)."""
    return client.get_report(job.id)


def run_job(
    target: str,
    what: str,
    start: Callable[[Client], JobInfo],
    result: Callable[[Client, JobInfo], T],
) -> T:
    """One job command: connect, `start` the job, follow it to success, return `result`.

    Server errors, Ctrl-C and a job that does not succeed end the command as in
    `connect` and `follow_job`.
    """
    with connect(target) as client:
        job = follow_job(client, start(client), what)
        return result(client, job)


def warn(message: str) -> None:
    """Print a warning on stderr."""
    err_console.print(f"[yellow]warning[/yellow] {escape(message)}")


def write_report(report: Mapping[str, Any], out: Path | None) -> Path | None:
    """Write a report: JSON for a .json path, else its HTML page (chosen by its schema).

    Without matplotlib (the ``report`` extra), or for a schema no page renders,
    the JSON is written beside it instead (same name, .json), and that path returned.
    Nothing is written where `out` is None (the command's ``--out`` was not given).
    """
    if out is None:
        return None
    if out.suffix != ".json":
        try:
            _html.write(report, out)
        except (_html.MissingPlotsError, _html.UnknownSchemaError) as exc:
            err_console.print(escape(f"{exc}; writing JSON instead"))
            out = out.with_suffix(".json")
    if out.suffix == ".json":
        out.write_text(json.dumps(dict(report), indent=2, sort_keys=True))
    err_console.print(escape(f"report written to {out}"))
    return out
