-- Record a provider delivery receipt: `sent` -> `delivered` | `delivery_failed`, plus its event row, in one
-- statement (one transaction).
-- Matching: by our message id (the `reference` we sent; primary key) first, else by the provider's message id,
-- and only among the messages of the channel the receipt was signed for. The UNION ALL ... LIMIT 1 stops at the
-- first branch that finds a row, so a receipt carrying our id never scans for the provider id.
-- Guarded: only a `sent` row changes. `delivered` and `delivery_failed` are final, so a duplicate or a late,
-- contradicting receipt changes nothing; a concurrent receipt for the same row re-checks the guard on the row's
-- newest version (READ COMMITTED) and finds it no longer `sent`.
-- Returns one row when the message exists: its id, its status after this statement, and whether it changed.
-- No row: no such message on this channel.
-- $1 channel, $2 message id (NULL when the receipt has no usable reference), $3 provider_message_id (NULL when
-- absent), $4 new status, $5 reason, $6 detail, $7 last_error (NULL keeps).
WITH target AS (
    (SELECT id, status FROM tidings.messages WHERE id = $2::uuid AND channel = $1)
    UNION ALL
    (SELECT id, status FROM tidings.messages
      WHERE $3::text IS NOT NULL AND provider_message_id = $3 AND channel = $1
      LIMIT 1)
    LIMIT 1
), done AS (
    UPDATE tidings.messages m
       SET status = $4::tidings.message_status,
           last_error = coalesce($7, m.last_error),
           updated_at = now()
      FROM target t
     WHERE m.id = t.id
       AND m.status = 'sent'
    RETURNING m.id, m.status, m.attempts
), event AS (
    INSERT INTO tidings.message_events (message_id, status, reason, attempt, detail)
    SELECT id, status, $5, attempts, $6 FROM done
)
SELECT t.id,
       coalesce(d.status, t.status)::text AS status,
       d.id IS NOT NULL AS changed
  FROM target t
  LEFT JOIN done d ON d.id = t.id
