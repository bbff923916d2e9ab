"""Numbered SQL migrations, one folder per engine: ``migrations/<engine>/NNNN_what.sql``.

A database is at version N when migrations 1..N have been applied; each engine
records N itself (SQLite in ``PRAGMA user_version``, PostgreSQL in a
``schema_migrations`` table). Plain SQL files rather than a migration tool:
the schema is small, both engines apply them inside one transaction, and a
reviewer reads exactly what runs.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file.

    Attributes:
        version: Its number; the schema version once it is applied.
        name: Its file name.
        statements: Its SQL statements, comments removed, in order.
    """

    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> tuple[str, ...]:
    """Splits a migration into statements on ``;`` after dropping ``--`` comments.

    The files are ours: no semicolons inside string literals or bodies.
    """
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    parts = "\n".join(lines).split(";")
    return tuple(part.strip() for part in parts if part.strip())


def load(engine: str) -> tuple[Migration, ...]:
    """The engine's migrations, ordered by version.

    Raises:
        RuntimeError: The files are not numbered 1, 2, 3... without gaps (a packaging bug).
    """
    folder = resources.files("assay.server.store").joinpath("migrations", engine)
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            statements = split_statements(entry.read_text(encoding="utf-8"))
            found.append(Migration(int(match.group(1)), entry.name, statements))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{engine} migrations are not numbered 1..n: {[m.name for m in found]}")
    return tuple(found)
