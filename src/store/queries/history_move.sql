-- The mover (see migration 0014): takes up to $3 finished messages, with their events, out of the hot tables and
-- into the history, in one statement (one transaction: a message is on exactly one side at any time).
-- $1: finished before this (now - [worker] history_after); $2: walk the primary key from above this id (the previous
-- batch's last id, NULL from the start), so a pass never re-reads what it passed over; $3: batch size.
-- A message moves when it can no longer change:
--   - finished (sent and later: a receipt for a moved `sent` message brings it back, tidings.history_restore);
--   - not changed since $1;
--   - a retryable failure (sending_failed, rejected, expired) only once its validity has passed (an operator
--     retry needs it in the hot table until then);
--   - counted by the event rollup (its events are older than the rollup's recount window), so the dashboard's
--     per-minute counts never miss an event that moved;
--   - in a fallback chain, only when no message of the chain is still live (a step may still be created or
--     released by a transition of the others).
-- Walks the primary key (UUIDv7: oldest first) below the id of time $1, so the hot table needs no extra index;
-- SKIP LOCKED: a row a worker or a receipt holds stays for the next pass. Walks at most four rows per message it
-- may move, so that old live rows (scheduled far ahead) cost a bounded amount per batch. Answers how many moved
-- and where the next batch starts.
WITH walked AS MATERIALIZED (
    SELECT m.id, m.status, m.updated_at, m.expires_at, m.chain_id
      FROM tidings.messages m
     WHERE m.id < (SELECT tidings.uuid_floor($1))
       AND ($2::uuid IS NULL OR m.id > $2)
     ORDER BY m.id
     LIMIT $3 * 4
), done AS (
    SELECT m.id
      FROM tidings.messages m
      JOIN walked w ON w.id = m.id
     WHERE m.status IN ('sent', 'delivered', 'delivery_failed', 'sending_failed', 'rejected', 'expired', 'canceled')
       AND m.updated_at < $1
       AND m.updated_at < (SELECT s.done_before - interval '5 minutes' FROM tidings.event_rollup_state s)
       AND (m.status NOT IN ('sending_failed', 'rejected', 'expired') OR m.expires_at <= now())
       AND (m.chain_id IS NULL OR NOT EXISTS (
               SELECT 1 FROM tidings.messages c
                WHERE c.chain_id = m.chain_id AND c.status IN ('accepted', 'scheduled', 'processing')))
     ORDER BY m.id
     LIMIT $3
       FOR UPDATE OF m SKIP LOCKED
), gone AS (
    DELETE FROM tidings.messages m WHERE m.id = ANY (ARRAY(SELECT id FROM done)) RETURNING m.*
), kept AS (
    INSERT INTO tidings.message_history SELECT * FROM gone
), events AS (
    DELETE FROM tidings.message_events e WHERE e.message_id = ANY (ARRAY(SELECT id FROM gone)) RETURNING e.*
), events_kept AS (
    INSERT INTO tidings.message_event_history SELECT * FROM events
)
SELECT (SELECT count(*) FROM gone) AS moved,
       -- Where the next batch starts: after the last message moved when the batch was full (the walk may have
       -- passed more that can move), else after the last row walked; NULL when the walk reached the end.
       CASE WHEN (SELECT count(*) FROM gone) >= $3 THEN (SELECT g.id FROM gone g ORDER BY g.id DESC LIMIT 1)
            WHEN (SELECT count(*) FROM walked) >= $3 * 4 THEN (SELECT w.id FROM walked w ORDER BY w.id DESC LIMIT 1)
       END AS resume_after
