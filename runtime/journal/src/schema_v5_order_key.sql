-- Journal schema, version 5: lanes. Documented in docs/journal.md.
-- A destination with several connections serves one "lane" of its queue per connection.
-- A message's order key (a hash of the interface's `order_by` field) decides its lane, so
-- messages with equal keys keep their arrival order; the lane is stored with the delivery
-- so that each connection reads exactly its own queue through the index.

ALTER TABLE messages ADD COLUMN order_key INTEGER;
ALTER TABLE deliveries ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS deliveries_owed;
CREATE INDEX deliveries_owed ON deliveries(destination, lane, message_id)
    WHERE status IN ('pending', 'retry');
