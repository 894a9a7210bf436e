-- Delete up to $2 finished messages created before $1 (and not changed since), with their events and callbacks.
-- Walks the primary key: UUIDv7 ids sort by creation time, so `id < uuid_v7($1)` is a range scan and the hot
-- table needs no extra index. The bound is a sub-select: uuid_v7() is volatile (random low bits), and a volatile
-- call in WHERE is evaluated per row and is no index bound, so the scan would read past it to the table's end.
-- Small batches, SKIP LOCKED: never blocks the claim or the completer.
WITH old AS (
    SELECT id
      FROM tidings.messages
     WHERE id < (SELECT tidings.uuid_v7($1))
       AND status IN ('sent', 'delivered', 'delivery_failed', 'sending_failed', 'rejected', 'expired', 'canceled')
       AND updated_at < $1
     ORDER BY id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM tidings.messages m WHERE m.id = ANY (ARRAY(SELECT id FROM old)) RETURNING m.id
), events AS (
    DELETE FROM tidings.message_events e WHERE e.message_id = ANY (ARRAY(SELECT id FROM gone))
), callbacks AS (
    DELETE FROM tidings.callback_outbox o WHERE o.message_id = ANY (ARRAY(SELECT id FROM gone))
)
SELECT count(*) FROM gone
