"""Long-running evaluation jobs (robustness suites, OOD fits, detectors): kinds, specs, the manager.

Where jobs are kept is the store's business (assay.server.store); its records
are re-exported here for the job code's convenience.
"""

from assay.server.store.records import JobRecord, JobState, Unit

__all__ = ["JobRecord", "JobState", "Unit"]
