-- Take every fallback log row (steps created and sent, appended by tidings.fallback_advance) and count them by
-- event, trigger and channel pair. DELETE ... RETURNING: every worker samples, and a row taken by one is gone for
-- the others (a concurrent DELETE waits for the row and then skips it), so each step is counted exactly once
-- across the fleet, and the table holds only the steps of the last few seconds.
WITH taken AS (
    DELETE FROM tidings.fallback_log
    RETURNING event, trigger, from_channel, to_channel
)
SELECT event, trigger, from_channel, to_channel, count(*)::bigint AS count
  FROM taken
 GROUP BY event, trigger, from_channel, to_channel
