-- Deletes up to $2 callbacks that are over (delivered or given up) and whose transition happened before $1: the
-- outbox is not partitioned (it only holds the callbacks producers asked for), and its rows outlive their
-- message's move to the history so that GET /v1/messages/{id} still lists them. Walks the primary key (a
-- callback's id is the UUIDv7 of its transition's time).
WITH old AS (
    SELECT id
      FROM tidings.callback_outbox
     WHERE id < (SELECT tidings.uuid_floor($1))
       AND (delivered_at IS NOT NULL OR given_up_at IS NOT NULL)
     ORDER BY id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM tidings.callback_outbox o WHERE o.id = ANY (ARRAY(SELECT id FROM old)) RETURNING o.id
)
SELECT count(*) FROM gone
