-- Per channel: seconds since the oldest due-but-unclaimed message became due. One short probe of the claim
-- index per priority level (0-9) and channel, instead of a scan of the backlog.
SELECT c.name AS channel,
       extract(epoch FROM now() - min(first.run_at))::double precision AS oldest_due_seconds
  FROM tidings.channels c
  CROSS JOIN generate_series(0, 9) AS p(priority)
  CROSS JOIN LATERAL (
      SELECT m.run_at
        FROM tidings.messages m
       WHERE m.status IN ('accepted', 'scheduled') AND m.priority = p.priority AND m.run_at <= now()
         AND m.channel = c.name
       ORDER BY m.run_at
       LIMIT 1
  ) first
 GROUP BY c.name
