-- How many messages wait (accepted, scheduled), counted no further than $1: whether the exact live counts
-- (stats_live.sql) are cheap enough for a page load. Reads the partial index messages_claim only.
SELECT count(*) FROM (SELECT 1 FROM tidings.messages WHERE status IN ('accepted', 'scheduled') LIMIT $1) w
