"""All server state behind one interface: jobs, units, reports, leases, profiles, datasets.

`Store` is the interface (see base.py for its rules); ``data.url`` picks the
implementation: SQLite for one machine, PostgreSQL for replicas.
"""

from assay.server.store.base import LeaseLostError, Store
from assay.server.store.records import (
    DatasetRecord,
    JobRecord,
    JobState,
    ProfileEntry,
    StoredProfile,
    Unit,
    UploadEvent,
)

__all__ = [
    "DatasetRecord",
    "JobRecord",
    "JobState",
    "LeaseLostError",
    "ProfileEntry",
    "Store",
    "StoredProfile",
    "Unit",
    "UploadEvent",
]
