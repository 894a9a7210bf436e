-- The dashboard's chart: status changes of the last $1 seconds, per minute. `sent` counts provider acceptances,
-- `failed` final failures (sending_failed, rejected, expired, delivery_failed), `deferred` moves back to scheduled
-- that are not the enqueue itself (retries, quiet-hours holds, 429 pauses). Minutes without events are absent
-- (the page draws them as zero). The rolled-up minutes (tidings.event_minutes, migration 0013) plus the events
-- after them: a day's chart reads at most 1440 rollup rows per channel and status, and a few minutes of events.
-- The bounds are scalar sub-selects, computed once, so they bound the index scans (see stats_recent.sql).
WITH changes AS (
    SELECT r.minute, r.status, r.enqueue, r.n
      FROM tidings.event_minutes r
     WHERE r.minute >= date_trunc('minute', now() - make_interval(secs => $1::double precision))
       AND r.minute < (SELECT done_before FROM tidings.event_rollup_state)
    UNION ALL
    SELECT date_trunc('minute', e.at), e.status, e.reason = 'enqueued', 1
      FROM tidings.message_events e
     WHERE e.at >= (SELECT greatest(done_before, date_trunc('minute', now() - make_interval(secs => $1::double precision)))
                      FROM tidings.event_rollup_state)
)
SELECT minute,
       coalesce(sum(n) FILTER (WHERE status = 'sent'), 0)::bigint AS sent,
       coalesce(sum(n) FILTER (WHERE status IN ('sending_failed', 'rejected', 'expired', 'delivery_failed')), 0)::bigint AS failed,
       coalesce(sum(n) FILTER (WHERE status = 'scheduled' AND NOT enqueue), 0)::bigint AS deferred
  FROM changes
 GROUP BY minute
 ORDER BY minute
