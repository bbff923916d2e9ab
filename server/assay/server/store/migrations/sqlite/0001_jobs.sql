-- Schema version 1: jobs, their finished units and their reports.
-- Kept exactly as the first release wrote it (IF NOT EXISTS included).
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    stage TEXT NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_kind ON jobs (kind, created_at);
CREATE TABLE IF NOT EXISTS units (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    meta TEXT NOT NULL,
    arrays BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, key));
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    json TEXT NOT NULL);
