-- Schema version 2: the status code of a failed job's error (an ErrorCode value), NULL before.
ALTER TABLE jobs ADD COLUMN error_code TEXT;
