-- Write a batch of attempt outcomes: one UPDATE over unnest'ed arrays plus one event row per applied change,
-- in one statement (one transaction).
-- Guarded: a row changes only while it is still 'processing' under the same lease. A message rescued
-- (lease expired) or canceled meanwhile is left alone, and its id is missing from the RETURNING list.
-- $1 id, $2 lease_id, $3 status, $4 run_at (NULL keeps), $5 attempts spent (0/1), $6 provider_message_id
-- (NULL keeps), $7 last_error (NULL keeps), $8 reason, $9 detail, $10 started_at.
WITH o AS (
    SELECT *
      FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::text[],
                  $8::text[], $9::jsonb[], $10::timestamptz[])
           AS o(id, lease_id, status, run_at, spent, provider_message_id, last_error, reason, detail, started_at)
), done AS (
    UPDATE tidings.messages m
       SET status = o.status::tidings.message_status,
           run_at = coalesce(o.run_at, m.run_at),
           attempts = m.attempts + o.spent,
           provider_message_id = coalesce(o.provider_message_id, m.provider_message_id),
           last_error = coalesce(o.last_error, m.last_error),
           lease_id = NULL,
           locked_until = NULL,
           updated_at = now()
      FROM o
     WHERE m.id = o.id
       AND m.status = 'processing'
       AND m.lease_id = o.lease_id
    RETURNING m.id, m.status, m.attempts, o.reason, o.detail, o.started_at
)
INSERT INTO tidings.message_events (message_id, status, reason, attempt, started_at, detail)
SELECT id, status, reason, attempts, started_at, detail FROM done
RETURNING message_id
