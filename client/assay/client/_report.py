"""`Report`: a job's report document, typed where every schema agrees, a mapping elsewhere.

Reports stay versioned JSON documents (each schema ships as a JSON Schema file
with the server, under ``assay/server/schemas/``), so the SDK does not mirror
every field in a class: `Report` types the fields all report schemas share and
reads like the JSON dict for the rest (``report["ranking"]``), which keeps code
written against the dict working; `raw` is that dict, ready for `json.dumps`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Report(Mapping[str, Any]):
    """A report document and the job that produced it ("" for inline ScoreRobustness).

    Args:
        job_id: The job whose report this is.
        raw: The JSON document as parsed.
    """

    __slots__ = ("job_id", "raw")

    def __init__(self, job_id: str, raw: dict[str, Any]) -> None:
        self.job_id = job_id
        self.raw = raw

    @property
    def schema(self) -> str:
        """The document's schema, e.g. "assay.ood.evaluation/v1"."""
        return str(self.raw.get("schema", ""))

    @property
    def _subject(self) -> Mapping[str, Any]:
        """The evaluated model, or detector for the aigen schemas."""
        found = self.raw.get("model") or self.raw.get("detector") or {}
        return found if isinstance(found, Mapping) else {}

    @property
    def model(self) -> str:
        """Name of the model (or AI-generated-image detector) the report is about."""
        return str(self._subject.get("name", ""))

    @property
    def model_version(self) -> str:
        """That model's version ("" when the report does not say)."""
        return str(self._subject.get("version", ""))

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"Report(job_id={self.job_id!r}, schema={self.schema!r}, model={self.model!r})"
