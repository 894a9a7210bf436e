-- Starts a rollup pass (see migration 0013): takes the state row unless another process holds it (then no row:
-- that process is rolling up), and answers the minutes to count: from five minutes before `done_before` (recounted
-- for late commits) up to the last whole minute that ended at least a minute ago, at most an hour past
-- `done_before` per pass (a long history is caught up in short passes).
SELECT done_before - interval '5 minutes' AS lo,
       least(date_trunc('minute', now() - interval '1 minute'), done_before + interval '1 hour') AS hi
  FROM tidings.event_rollup_state
   FOR UPDATE SKIP LOCKED
