-- A message's events, oldest first.
SELECT at, status, reason, attempt, started_at, detail
  FROM tidings.message_events
 WHERE message_id = $1
 ORDER BY id
