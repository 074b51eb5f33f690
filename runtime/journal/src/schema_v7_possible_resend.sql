-- Journal schema, version 7: possible resends. Documented in docs/journal.md.
-- A delivery worker records its results a batch at a time, so an engine that stops
-- without finishing (kill -9, power loss) may have sent messages it never recorded as
-- sent. The next engine sends them again; before it does, it flags the deliveries that
-- may be such repeats, so that a receiver's second copy (same MSH-10) is accounted for.

ALTER TABLE deliveries ADD COLUMN possible_resend INTEGER NOT NULL DEFAULT 0;
-- 1 for a delivery queued when its message was ingested (the engine's fast path), until
-- it is requeued (a replay); a lane sends those in queue order without passing any over,
-- which is what bounds the window of possible resends.
ALTER TABLE deliveries ADD COLUMN queued_at_ingest INTEGER NOT NULL DEFAULT 0;
