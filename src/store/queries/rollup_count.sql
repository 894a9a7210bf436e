-- One rollup pass's recount of the minutes [$1, $2), second step (after rollup_clear.sql): the events' counts by
-- channel, status, and whether the change was the enqueue itself. The events are found by the BRIN index on `at`.
INSERT INTO tidings.event_minutes (minute, channel, status, enqueue, n)
SELECT date_trunc('minute', e.at), m.channel, e.status, e.reason = 'enqueued', count(*)
  FROM tidings.message_events e
  JOIN tidings.messages m ON m.id = e.message_id
 WHERE e.at >= $1 AND e.at < $2
 GROUP BY 1, 2, 3, 4
