-- The last $1 failures (retries and terminal failures) across all channels, newest first.
SELECT e.at, m.channel, e.message_id, e.status::text AS status, e.reason, e.detail
  FROM tidings.message_events e
  JOIN tidings.messages m ON m.id = e.message_id
 WHERE e.id > (SELECT coalesce(max(id), 0) - 100000 FROM tidings.message_events)
   AND e.status IN ('scheduled', 'sending_failed', 'expired', 'rejected', 'delivery_failed')
   AND e.reason NOT IN ('enqueued', 'quiet_hours')
 ORDER BY e.id DESC
 LIMIT $1
