-- Run (in the claim's own transaction) before message_claim.sql. The claim must walk messages_claim in order and
-- stop after its LIMIT. On a table that churns this fast the statistics are always stale, and with a low row
-- guess the planner prefers a bitmap scan plus a sort of the whole backlog: measured mid-drain at 77 ms instead
-- of 15 ms per 1000 rows. Turning those two plan types off for this one transaction leaves the ordered index walk.
SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)
