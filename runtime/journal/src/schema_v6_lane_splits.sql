-- Journal schema, version 6: lane splits. Documented in docs/journal.md.
-- The engine records each destination's split when it starts, so that every process on
-- the journal (a `plexus errors replay` beside the engine) queues to the same lane the
-- engine's workers read, not to lane 0.

CREATE TABLE lane_splits (
    interface   TEXT    NOT NULL,
    destination TEXT    NOT NULL,
    lanes       INTEGER NOT NULL,
    lane_key    TEXT    NOT NULL,
    set_at      INTEGER NOT NULL,
    PRIMARY KEY (interface, destination)
) WITHOUT ROWID;
