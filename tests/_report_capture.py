"""Every report the test session produces, checked against its shipped JSON Schema.

The issue asks that each report schema ship as a JSON Schema file *and* that
the tests prove the server writes what the file says. Reports leave the server
in two ways, and both are spied on for the whole session:

* the stores' ``set_result`` (SQLite and PostgreSQL share it): the one place a
  job's report is persisted. The spy reads the stored document back (exactly
  what GetReport returns) and validates it against the schema its ``schema``
  field, or else its job kind, names. Results of job kinds the server does not
  have (store unit tests use toy kinds and toy results) are counted as
  unchecked, not validated.
* ``robustness.report.build_report``: also reached by ScoreRobustness, which
  returns its report without a job, and by unit tests that build reports for
  branches the demo model cannot reach (ImageNet-1k/AlexNet CEs, a paired
  baseline). Every module that bound the function is patched, so those calls
  are seen too.

Reports written by servers in a subprocess are not seen here.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from assay.server import report_schemas
from assay.server.robustness import report as robustness_report
from assay.server.store._jobs import JobsMixin

_MAX_ERRORS = 5


def _problems(report: Mapping[str, Any], kind: str | None) -> tuple[str | None, list[str]]:
    """The schema name and its violations (empty when valid)."""
    try:
        name = report_schemas.schema_name(report, kind)
    except report_schemas.UnknownSchemaError as exc:
        return None, [str(exc)]
    return name, [v[:300] for v in report_schemas.violations(report, kind)[:_MAX_ERRORS]]


class ReportCapture:
    """Counts validated reports per schema and keeps the failures until a test claims them."""

    def __init__(self) -> None:
        self.validated: Counter[str] = Counter()
        self.unchecked = 0
        self._failures: list[str] = []

    def check(self, report: Mapping[str, Any], kind: str | None, where: str) -> None:
        """Validate one report (or count it unchecked: a toy job kind without a schema field)."""
        if "schema" not in report and kind not in report_schemas.JOB_KIND_SCHEMAS:
            self.unchecked += 1
            return
        name, problems = _problems(report, kind)
        if problems:
            self._failures.append(
                f"{where} ({name or 'no schema'}):\n    " + "\n    ".join(problems)
            )
        else:
            self.validated[f"{name} [{where.split()[0]}]"] += 1

    def take_failures(self) -> list[str]:
        """The failures recorded since the last call."""
        failures, self._failures = self._failures, []
        return failures

    def summary(self) -> list[str]:
        """Lines for the terminal summary."""
        lines = [f"  {count:4d}  {key}" for key, count in sorted(self.validated.items())]
        total = sum(self.validated.values())
        return [
            f"report schemas: {total} reports validated against their shipped JSON Schema",
            *lines,
            f"  {self.unchecked:4d}  unchecked (toy job kinds of the store's own tests)",
        ]

    def install(self) -> Callable[[], None]:
        """Start spying; returns the function that restores the originals."""
        undo = [self._spy_on_store(), self._spy_on_builder()]

        def restore() -> None:
            for step in undo:
                step()

        return restore

    def _spy_on_store(self) -> Callable[[], None]:
        original = JobsMixin.set_result
        capture = self

        @wraps(original)
        def set_result(
            store: JobsMixin, job_id: str, result: Mapping[str, Any], owner: str | None = None
        ) -> None:
            original(store, job_id, result, owner)
            stored = store.result(job_id)
            assert stored is not None
            kind = store.get(job_id).kind
            capture.check(stored, kind, f"job {job_id} ({kind})")

        JobsMixin.set_result = set_result  # type: ignore[method-assign]

        def restore() -> None:
            JobsMixin.set_result = original  # type: ignore[method-assign]

        return restore

    def _spy_on_builder(self) -> Callable[[], None]:
        original = robustness_report.build_report
        capture = self

        @wraps(original)
        def build_report(*args: Any, **kwargs: Any) -> dict[str, Any]:
            report = original(*args, **kwargs)
            try:
                document = json.loads(json.dumps(report, allow_nan=False))
            except (TypeError, ValueError) as exc:
                capture._failures.append(f"build_report: not strict JSON ({exc})")
            else:
                capture.check(document, "robustness", "build_report")
            return report

        bound = [
            module
            for name, module in list(sys.modules.items())
            if name.startswith(("assay.", "tests."))
            and getattr(module, "build_report", None) is original
        ]
        for module in bound:
            module.build_report = build_report  # type: ignore[attr-defined]

        def restore() -> None:
            for module in bound:
                module.build_report = original  # type: ignore[attr-defined]

        return restore
