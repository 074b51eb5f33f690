-- Journal schema, version 3: shadow runs. Documented in docs/journal.md.
-- A shadow run is a candidate chain running beside an interface's active chain on live
-- traffic: its results are journaled here and never delivered.

CREATE TABLE shadow_runs (
    id         INTEGER PRIMARY KEY,
    interface  TEXT    NOT NULL,
    -- The candidate chain, one `plugin@sha256` per stage, in order, space separated.
    candidate  TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    started_by TEXT    NOT NULL,
    ended_at   INTEGER,
    -- Why it ended: stopped, promoted, replaced, ...
    ended_how  TEXT
);

CREATE TABLE shadow_results (
    run_id     INTEGER NOT NULL REFERENCES shadow_runs(id) ON DELETE CASCADE,
    -- The journaled message (no foreign key: retention may prune the message first).
    message_id INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    -- How each chain ended: forward, filter, fail or trap.
    active     TEXT    NOT NULL,
    candidate  TEXT    NOT NULL,
    -- Paths whose values differ between the two outputs, one per line ('' when equal).
    differing  TEXT    NOT NULL,
    -- The candidate's output message, when it forwarded one.
    output     BLOB,
    -- The candidate's failure (kind and path), when it failed.
    detail     TEXT,
    PRIMARY KEY (run_id, message_id)
) WITHOUT ROWID;

-- Retention deletes results by age.
CREATE INDEX shadow_results_at ON shadow_results (at);
