-- Journal schema, version 4: duplicates are found through an in-memory window.
-- Documented in docs/journal.md. The index on (interface, control_id) took a random leaf
-- page per message, the largest share of every group commit's writes; the writer now
-- keeps the window in memory (rebuilt from `messages` at open, through
-- messages_by_received_at) and confirms each candidate by primary key.

DROP INDEX IF EXISTS messages_by_control_id;
