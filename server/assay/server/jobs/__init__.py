"""Persistence for long-running evaluation jobs (robustness suites, OOD fits, detectors).

A job's finished units are stored as they are produced, so a crash loses no
finished work: at start the server resumes or fails what ``interrupted()``
returns.
"""

from assay.server.jobs.store import JobStore, SqliteJobStore
from assay.server.store.records import JobRecord, JobState, Unit

__all__ = ["JobRecord", "JobState", "JobStore", "SqliteJobStore", "Unit"]
