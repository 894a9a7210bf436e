-- One page of the message list (hot or in history), newest first, when no filter has an index (channel, use case,
-- a status other than failures or waiting ones): a walk of the primary key from the cursor $1 (within the
-- created-time bounds $2, $3), at most $8 messages deep. A filter that matches rarely, or never, would otherwise walk the whole history for one
-- page; this one costs at most $8 rows, and says how far it got: every row answers `scan_floor` (the last id
-- walked) and `scanned` (how many were), and when the walk used its whole budget the caller goes on below
-- `scan_floor`. One row with NULL id when nothing matched. Filters: $4 statuses, $5 channel, $6 use case; $7 most
-- rows.
WITH scanned AS MATERIALIZED (
    SELECT id, status, channel, use_case
      FROM tidings.messages_all
     WHERE ($1::uuid IS NULL OR id < $1)
       AND ($2::uuid IS NULL OR id >= $2)
       AND ($3::uuid IS NULL OR id < $3)
     ORDER BY id DESC
     LIMIT $8
), hits AS (
    SELECT id
      FROM scanned
     WHERE ($4::text[] IS NULL OR status::text = ANY ($4))
       AND ($5::text IS NULL OR channel = $5)
       AND ($6::text IS NULL OR use_case = $6)
     ORDER BY id DESC
     LIMIT $7
), walk AS (
    -- (No min() for uuid in PostgreSQL 15.)
    SELECT (SELECT id FROM scanned ORDER BY id LIMIT 1) AS scan_floor, (SELECT count(*) FROM scanned) AS scanned
)
SELECT m.id, m.channel, m.status::text AS status, m.use_case, m.priority, m.recipient, m.tags, m.reference,
       m.attempts, m.max_attempts, m.provider_message_id, m.last_error, m.scheduled_for, m.run_at, m.expires_at,
       m.created_at, m.updated_at, w.scan_floor, w.scanned
  FROM walk w
  LEFT JOIN (hits h JOIN tidings.messages_all m ON m.id = h.id) ON true
 ORDER BY m.id DESC NULLS LAST
