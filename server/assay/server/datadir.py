"""The server's data folder, created and proved writable before anything else starts.

A server that cannot write its data folder must stop at once with one line that
names the folder and the setting to change. Before this check the shipped
container (``HOME=/nonexistent``, read-only root filesystem, ``data.dir``
unset) died in a crash loop on a FileNotFoundError traceback from whichever
component touched the folder first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from assay.server.errors import ConfigError
from assay.server.settings import DataSettings


class DataDirError(ConfigError):
    """The data folder cannot be created or written."""


def ensure_data_dir(data: DataSettings) -> Path:
    """Create ``data.dir`` if needed and check a file can be written in it.

    Returns:
        The folder.

    Raises:
        DataDirError: with one line naming the folder, the cause and the
            setting to change.
    """
    folder = data.dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirError(_describe(data, exc)) from None
    return folder


def _describe(data: DataSettings, exc: OSError) -> str:
    cause = exc.strerror or type(exc).__name__
    if exc.filename:
        cause = f"{cause}: {exc.filename}"
    where = "data.dir" if "dir" in data.model_fields_set else (
        "data.dir is unset, so it defaults to $XDG_DATA_HOME/assay or ~/.local/share/assay"
    )  # fmt: skip
    holds = (
        "uploads"
        if data.url
        else "uploads, and the SQLite store unless ASSAY_DATA__URL names another"
    )
    return (
        f"cannot write the data folder {data.dir} ({where}): {cause}; "
        f"set ASSAY_DATA__DIR (data.dir) to a writable folder ({holds})"
    )
