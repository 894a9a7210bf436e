-- A message's events (hot or in history), oldest first (each row names the message and its channel, as
-- tidings.events does).
SELECT at, status, reason, attempt, started_at, detail, message_id AS message,
       (SELECT m.channel FROM tidings.messages_all m WHERE m.id = $1) AS channel
  FROM tidings.message_events_all
 WHERE message_id = $1
 ORDER BY id
