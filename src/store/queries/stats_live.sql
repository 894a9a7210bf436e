-- Live messages by channel and status, for the sampler (every 5 s) and `tidings stats`. Only the live statuses,
-- in two branches whose WHERE clauses are exactly the predicates of the partial indexes messages_claim
-- (accepted, scheduled) and messages_lease (leased = processing): each branch reads only its index's rows. A single
-- `status IN (...)` over all three matches neither index and scans the whole history.
SELECT channel, status::text AS status, count(*) AS count
  FROM tidings.messages
 WHERE status IN ('accepted', 'scheduled')
 GROUP BY 1, 2
UNION ALL
SELECT channel, status::text AS status, count(*) AS count
  FROM tidings.messages
 WHERE locked_until IS NOT NULL
 GROUP BY 1, 2
 ORDER BY 1, 2
