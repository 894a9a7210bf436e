-- Claim up to $1 due callbacks for lease $2, held $3 milliseconds.
-- In order per message: a row is due only when no earlier row of its message is still pending (delivered or
-- given up are both done), so a message's callbacks never overtake each other, whichever worker sends them.
-- FOR UPDATE SKIP LOCKED: workers claiming at once take different rows and never wait on each other.
-- The lease is run_at itself: a claimed row is due again when its lease ends, so the rows of a worker killed
-- mid-delivery come back without a rescuer. `attempts` counts the POSTs started; with lease_id it also tells
-- one claim of a row from the next, which guards the completion.
WITH due AS (
    SELECT o.id
      FROM tidings.callback_outbox o
     WHERE o.delivered_at IS NULL
       AND o.given_up_at IS NULL
       AND o.run_at <= now()
       AND NOT EXISTS (
           SELECT 1
             FROM tidings.callback_outbox p
            WHERE p.message_id = o.message_id
              AND p.event_id < o.event_id
              AND p.delivered_at IS NULL
              AND p.given_up_at IS NULL)
     ORDER BY o.run_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE tidings.callback_outbox o
   SET lease_id = $2,
       run_at = now() + $3 * interval '1 millisecond',
       attempts = o.attempts + 1
  FROM due
 WHERE o.id = due.id
RETURNING o.id, o.message_id, o.url, o.channel, o.status::text AS status, o.reason, o.message_attempt, o.at,
          o.provider_message_id, o.reference, o.tags, o.attempts
