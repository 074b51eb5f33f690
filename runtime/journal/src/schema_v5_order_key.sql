-- Journal schema, version 5: a message's order key. Documented in docs/journal.md.
-- A destination with several connections sends one "lane" per connection; a delivery's
-- lane is order_key % connections, so messages with equal keys (the interface's
-- `order_by` field, e.g. the patient id) keep their arrival order. NULL counts as 0.

ALTER TABLE messages ADD COLUMN order_key INTEGER;
