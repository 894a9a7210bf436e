-- The dashboard's chart: status changes of the last $1 seconds, per minute. `sent` counts provider acceptances,
-- `failed` final failures (sending_failed, rejected, expired, delivery_failed), `deferred` moves back to scheduled
-- that are not the enqueue itself (retries, quiet-hours holds, 429 pauses). Minutes without events are absent
-- (the page draws them as zero). Bounded by `at` only: no index covers it, so this reads the event history
-- (see the README's dashboard notes; a BRIN index on `at` would make it a range scan).
SELECT date_trunc('minute', at) AS minute,
       count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status IN ('sending_failed', 'rejected', 'expired', 'delivery_failed')) AS failed,
       count(*) FILTER (WHERE status = 'scheduled' AND reason <> 'enqueued') AS deferred
  FROM tidings.message_events
 WHERE at >= now() - make_interval(secs => $1::double precision)
 GROUP BY 1
 ORDER BY 1
