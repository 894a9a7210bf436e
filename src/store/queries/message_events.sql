-- A message's events, oldest first (each row names the message and its channel, as tidings.events does).
SELECT at, status, reason, attempt, started_at, detail, message_id AS message,
       (SELECT m.channel FROM tidings.messages m WHERE m.id = $1) AS channel
  FROM tidings.message_events
 WHERE message_id = $1
 ORDER BY id
