-- Live messages by channel and status for a page load, in one pass: the waiting ones (accepted, scheduled) read
-- from the partial index messages_claim no further than $1 rows, and the leased ones (processing) from
-- messages_lease, as in stats_live.sql. When the waiting rows reach $1 the caller answers the estimate instead
-- (stats_live_estimate.sql); below it these counts are exact.
SELECT channel, status::text AS status, count(*) AS count
  FROM (SELECT channel, status FROM tidings.messages WHERE status IN ('accepted', 'scheduled') LIMIT $1) w
 GROUP BY 1, 2
UNION ALL
SELECT channel, status::text AS status, count(*) AS count
  FROM tidings.messages
 WHERE locked_until IS NOT NULL
 GROUP BY 1, 2
 ORDER BY 1, 2
