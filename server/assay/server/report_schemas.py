"""JSON Schemas of the report documents that GetReport (and ScoreRobustness) return.

Reports stay versioned JSON documents because they are large and grow; so that
a Node or Go client need not reverse-engineer them, every report schema ships
as a JSON Schema (draft 2020-12) file in this package, at
``assay/server/schemas/<schema name with "/" as ".">.schema.json`` (for
``assay.robustness.report/v1``: ``assay.robustness.report.v1.schema.json``).
Each file's ``$id`` is the schema name.

The server never validates at run time (``jsonschema`` is a test dependency,
imported lazily by :func:`validate`); the test session validates every report
the tests produce, so a schema file cannot drift from the code that writes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Final

__all__ = [
    "JOB_KIND_SCHEMAS",
    "REPORT_SCHEMAS",
    "UnknownSchemaError",
    "file_name",
    "schema_for",
    "schema_name",
    "validate",
    "violations",
]

REPORT_SCHEMAS: Final = (
    "assay.robustness.report/v1",
    "assay.ood.evaluation/v1",
    "assay.anomaly.evaluation/v1",
    "assay.aigen.evaluation/v1",
    "assay.ood.profile_summary/v1",
    "assay.aigen.profile_summary/v1",
)
"""Every report schema the server writes; each has a file in ``schemas/``."""

JOB_KIND_SCHEMAS: Final[Mapping[str, str]] = {
    "robustness": "assay.robustness.report/v1",
    "ood_evaluation": "assay.ood.evaluation/v1",
    "anomaly_evaluation": "assay.anomaly.evaluation/v1",
    "aigen_evaluation": "assay.aigen.evaluation/v1",
    "ood_profile": "assay.ood.profile_summary/v1",
    "aigen_profile": "assay.aigen.profile_summary/v1",
}
"""The report schema of each job kind (the fit jobs' results carry no ``schema`` field)."""

_FOLDER: Final = "schemas"


class UnknownSchemaError(LookupError):
    """A report names no schema this package ships, or contradicts its job kind."""


def file_name(name: str) -> str:
    """The file holding schema ``name``: ``assay.ood.evaluation/v1`` -> ``....v1.schema.json``."""
    return name.replace("/", ".") + ".schema.json"


@cache
def _load(name: str) -> str:
    if name not in REPORT_SCHEMAS:
        known = ", ".join(REPORT_SCHEMAS)
        raise UnknownSchemaError(f"no report schema {name!r}; known: {known}")
    return (resources.files("assay.server") / _FOLDER / file_name(name)).read_text("utf-8")


def schema_for(name: str) -> dict[str, Any]:
    """The JSON Schema document of report schema ``name`` (a fresh copy).

    Raises:
        UnknownSchemaError: When ``name`` is not a shipped report schema.
    """
    document: dict[str, Any] = json.loads(_load(name))
    return document


def schema_name(report: Mapping[str, Any], kind: str | None = None) -> str:
    """The schema a report claims: its ``schema`` field, else its job kind's schema.

    Args:
        report: A report document.
        kind: The job kind that produced it, when known.

    Raises:
        UnknownSchemaError: When neither names a shipped schema, or they disagree.
    """
    claimed = report.get("schema")
    expected = JOB_KIND_SCHEMAS.get(kind) if kind is not None else None
    if claimed is None and expected is None:
        raise UnknownSchemaError(f"the report has no `schema` field and job kind {kind!r} none")
    if claimed is not None and expected is not None and claimed != expected:
        raise UnknownSchemaError(f"a {kind!r} job wrote schema {claimed!r}, expected {expected!r}")
    name = str(claimed if claimed is not None else expected)
    _load(name)
    return name


def validate(report: Mapping[str, Any], kind: str | None = None) -> str:
    """Check a report against its shipped schema; returns the schema name.

    Needs the ``jsonschema`` package (a development dependency).

    Raises:
        UnknownSchemaError: See :func:`schema_name`.
        jsonschema.ValidationError: The most relevant violation, with its path in the document.
    """
    from jsonschema import Draft202012Validator

    name = schema_name(report, kind)
    Draft202012Validator(schema_for(name)).validate(report)
    return name


def violations(report: Mapping[str, Any], kind: str | None = None) -> list[str]:
    """Every violation as ``"<JSON path>: <message>"``, innermost first; empty when valid.

    Inside a ``oneOf`` (a nullable value) the failures of each alternative are
    listed, so the path names the offending leaf, not only the nullable parent.

    Raises:
        UnknownSchemaError: See :func:`schema_name`.
    """
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema_for(schema_name(report, kind)))
    found: list[str] = []
    pending = list(validator.iter_errors(report))
    while pending:
        error = pending.pop(0)
        if error.context:
            pending.extend(error.context)
        else:
            found.append(f"{error.json_path}: {error.message}")
    return sorted(found, key=lambda line: -line.count("."))
