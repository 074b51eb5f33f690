-- Journal schema, version 1. Documented in docs/journal.md; keep the two in step.
-- Times are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    interface    TEXT    NOT NULL,
    source_kind  TEXT    NOT NULL,
    source_peer  TEXT,
    received_at  INTEGER NOT NULL,
    control_id   TEXT,
    message_type TEXT,
    duplicate_of INTEGER REFERENCES messages(id) ON DELETE SET NULL,
    processed    INTEGER NOT NULL DEFAULT 0,
    replays      INTEGER NOT NULL DEFAULT 0,
    raw          BLOB    NOT NULL
);
CREATE INDEX messages_by_control_id ON messages(interface, control_id, received_at);
CREATE INDEX messages_by_received_at ON messages(received_at);
CREATE INDEX messages_by_duplicate_of ON messages(duplicate_of) WHERE duplicate_of IS NOT NULL;
CREATE INDEX messages_unprocessed ON messages(id) WHERE processed = 0;

CREATE TABLE stages (
    id            INTEGER PRIMARY KEY,
    message_id    INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    stage_index   INTEGER NOT NULL,
    plugin        TEXT    NOT NULL,
    plugin_sha256 TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    detail        TEXT,
    output        BLOB,
    recorded_at   INTEGER NOT NULL
);
CREATE INDEX stages_by_message ON stages(message_id, id);

CREATE TABLE edits (
    stage_id INTEGER NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    path     TEXT    NOT NULL,
    old      TEXT,
    new      TEXT,
    PRIMARY KEY (stage_id, seq)
) WITHOUT ROWID;

CREATE TABLE deliveries (
    message_id  INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    destination TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    next_at     INTEGER,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (message_id, destination)
) WITHOUT ROWID;
CREATE INDEX deliveries_owed ON deliveries(destination, message_id)
    WHERE status IN ('pending', 'retry');

CREATE TABLE errors (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    stage           TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    path            TEXT,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    occurrences     INTEGER NOT NULL DEFAULT 1,
    replays         INTEGER NOT NULL DEFAULT 0,
    resolved_at     INTEGER,
    resolution_note TEXT
);
CREATE UNIQUE INDEX errors_one_open_per_message ON errors(message_id) WHERE resolved_at IS NULL;
CREATE INDEX errors_by_message ON errors(message_id);
CREATE INDEX errors_open_by_age ON errors(first_seen) WHERE resolved_at IS NULL;
