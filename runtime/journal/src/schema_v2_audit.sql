-- Journal schema, version 2: the audit log. Documented in docs/journal.md.
-- Append-only and hash-chained: `hash` is the sha256 (hex) of the previous entry's hash
-- and this entry's fields (see `audit_hash` in sqlite.rs); `prev_hash` of the first entry
-- is 64 zeros. Editing or deleting a row breaks the chain at that row.

CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
