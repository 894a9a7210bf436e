-- Messages created in the last $1 seconds, by channel and status. A primary-key range scan (UUIDv7 ids are
-- time-ordered), so it costs what the window holds, not the whole history. The bound is a sub-select, computed once
-- (uuid_v7() is volatile: called in WHERE it would run per row and make this a scan of the whole table).
SELECT channel, status::text AS status, count(*) AS count
  FROM tidings.messages
 WHERE id >= (SELECT tidings.uuid_v7(now() - make_interval(secs => $1::double precision)))
 GROUP BY channel, status
 ORDER BY channel, status
