"""`assay datasets ...`: list and delete the datasets uploaded to a server."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import typer

from assay.client import _cli_common as cli

app = typer.Typer(no_args_is_help=True, help="Datasets uploaded to the server.")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


@app.command("list")
def list_datasets(
    target: cli.Target = cli.DEFAULT_TARGET,
    as_json: cli.AsJson = False,
) -> None:
    """List the uploaded datasets."""
    with cli.connect(target) as client:
        found = client.list_datasets()
    if as_json:
        cli.console.print_json(json.dumps([asdict(d) for d in found]))
        return
    columns = ("name", "files", "size", "uploaded", "by", "path")
    listed = cli.table("uploaded datasets", columns, right=("files", "size"))
    for d in found:
        when = datetime.fromtimestamp(d.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        listed.add_row(d.name, str(d.files), _size(d.bytes), when, d.uploaded_by, d.path)
    cli.console.print(listed)


@app.command("delete")
def delete_dataset(
    name: Annotated[str, typer.Argument(help="The dataset's name.")],
    target: cli.Target = cli.DEFAULT_TARGET,
) -> None:
    """Delete an uploaded dataset (refused while a pending or running job uses it)."""
    with cli.connect(target) as client:
        deleted = client.delete_dataset(name)
    cli.console.print(
        f"deleted dataset {deleted.name} ({deleted.files} files, {_size(deleted.bytes)})"
    )
