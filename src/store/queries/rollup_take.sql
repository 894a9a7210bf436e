-- Starts a rollup pass (see migration 0013): takes the state row unless another process holds it (then no row:
-- that process is rolling up), and answers the minutes to count: from five minutes before `done_before` (recounted
-- for late commits) up to the last whole minute that ended at least a minute ago, at most an hour past
-- `done_before` per pass (a long history is caught up in short passes).
-- When more than an hour behind, nothing is caught up before the oldest event still in the hot table (by id: the
-- primary key's first entry): a fresh install (its `done_before` starts 25 hours back) or a long-idle one starts
-- there instead of walking empty hours, each pass of which reads every page BRIN has not summarized yet (on a
-- fresh database under load, 25 passes of ~10 ms in the first seconds).
SELECT base - interval '5 minutes' AS lo,
       least(date_trunc('minute', now() - interval '1 minute'), base + interval '1 hour') AS hi
  FROM (SELECT CASE WHEN s.done_before >= now() - interval '1 hour' THEN s.done_before
                    ELSE greatest(s.done_before,
                                  least(date_trunc('minute', now() - interval '1 minute'),
                                        (SELECT date_trunc('minute', e.at)
                                           FROM tidings.message_events e ORDER BY e.id LIMIT 1))) END AS base
          FROM tidings.event_rollup_state s
           FOR UPDATE SKIP LOCKED) state
