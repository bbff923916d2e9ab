-- Version 1: jobs, their finished units and their reports (SQLite's schema version 2).
-- Times are seconds since the epoch (double precision), as in SQLite and the records;
-- JSON is text (kept byte for byte, see postgres.py); arrays are .npz bytes in bytea.
CREATE TABLE jobs (
    id text PRIMARY KEY,
    kind text NOT NULL,
    state text NOT NULL,
    spec text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    done integer NOT NULL,
    total integer NOT NULL,
    stage text NOT NULL,
    error text,
    attempts integer NOT NULL,
    error_code text);
CREATE INDEX jobs_by_state ON jobs (state, created_at);
CREATE INDEX jobs_by_kind ON jobs (kind, created_at);

-- seq keeps the order units were first stored (SQLite's rowid); an upsert keeps it.
CREATE TABLE units (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    meta text NOT NULL,
    arrays bytea NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (job_id, key));

CREATE TABLE results (
    job_id text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    json text NOT NULL);
