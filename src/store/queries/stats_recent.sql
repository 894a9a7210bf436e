-- Status changes of the last $1 seconds (whole minutes), by channel and status: the rolled-up minutes
-- (tidings.event_minutes, migration 0013) plus the events after them, so the answer is current and costs what the
-- last few minutes hold, not the history. A message enqueued and sent in the window counts under `accepted` and
-- under `sent`. The bounds are scalar sub-selects, computed once before the scan, so they bound the index scans
-- (as a join with the state row, the events' bound would be known only per row: a walk of the whole history).
SELECT channel, status::text AS status, sum(n)::bigint AS count
  FROM (SELECT r.channel, r.status, r.n
          FROM tidings.event_minutes r
         WHERE r.minute >= date_trunc('minute', now() - make_interval(secs => $1::double precision))
           AND r.minute < (SELECT done_before FROM tidings.event_rollup_state)
        UNION ALL
        SELECT m.channel, e.status, 1
          FROM tidings.message_events e
          JOIN tidings.messages m ON m.id = e.message_id
         WHERE e.at >= (SELECT greatest(done_before,
                                        date_trunc('minute', now() - make_interval(secs => $1::double precision)))
                          FROM tidings.event_rollup_state)) x
 GROUP BY channel, status
 ORDER BY channel, status
