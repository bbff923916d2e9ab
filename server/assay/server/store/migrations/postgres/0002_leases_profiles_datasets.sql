-- Version 2: job leases, profiles as one row each, dataset metadata and the upload log.

-- The replica running the job and when its lease runs out, on the database's clock.
ALTER TABLE jobs ADD COLUMN owner text;
ALTER TABLE jobs ADD COLUMN lease_until double precision;

-- One row per profile: document and arrays are written (and replaced) together.
CREATE TABLE profiles (
    kind text NOT NULL,
    name text NOT NULL,
    version text NOT NULL,
    document text NOT NULL,
    blob bytea,
    etag text NOT NULL,
    updated_at double precision NOT NULL,
    size bigint NOT NULL,
    PRIMARY KEY (kind, name, version));

CREATE TABLE datasets (
    name text PRIMARY KEY,
    version text NOT NULL,
    files bigint NOT NULL,
    bytes bigint NOT NULL,
    created_at double precision NOT NULL,
    uploaded_by text NOT NULL);

CREATE TABLE uploads (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset text NOT NULL,
    version text NOT NULL,
    action text NOT NULL,
    files bigint NOT NULL,
    bytes bigint NOT NULL,
    at double precision NOT NULL,
    actor text NOT NULL,
    detail text NOT NULL);
CREATE INDEX uploads_by_dataset ON uploads (dataset, at);
