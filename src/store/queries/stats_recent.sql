-- Status changes of the last $1 seconds (whole minutes), by channel and status: the rolled-up minutes
-- (tidings.event_minutes, migration 0014) plus the events after them, so the answer is current and costs what the
-- last few minutes hold, not the history. A message enqueued and sent in the window counts under `accepted` and
-- under `sent`.
WITH s AS (
    SELECT done_before, date_trunc('minute', now() - make_interval(secs => $1::double precision)) AS since
      FROM tidings.event_rollup_state
)
SELECT channel, status::text AS status, sum(n)::bigint AS count
  FROM (SELECT r.channel, r.status, r.n
          FROM tidings.event_minutes r, s
         WHERE r.minute >= s.since AND r.minute < s.done_before
        UNION ALL
        SELECT m.channel, e.status, 1
          FROM s, tidings.message_events e
          JOIN tidings.messages m ON m.id = e.message_id
         WHERE e.at >= greatest(s.done_before, s.since)) x
 GROUP BY channel, status
 ORDER BY channel, status
