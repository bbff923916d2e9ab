-- Schema version 3: job leases, profiles as one row each, dataset metadata and the upload log.

-- The replica running the job and when its lease runs out (seconds since the epoch).
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;

-- One row per profile: document and arrays are written (and replaced) together.
CREATE TABLE profiles (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    document TEXT NOT NULL,
    blob BLOB,
    etag TEXT NOT NULL,
    updated_at REAL NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (kind, name, version));

CREATE TABLE datasets (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    uploaded_by TEXT NOT NULL);

CREATE TABLE uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    version TEXT NOT NULL,
    action TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL);
CREATE INDEX uploads_by_dataset ON uploads (dataset, at);
