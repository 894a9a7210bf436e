-- One page of the message list, newest first, for `GET /v1/messages`, when a filter has an index (otherwise
-- message_list_scan.sql). Keyset pagination on the primary key (UUIDv7 ids are time-ordered): $1 is the last id of
-- the previous page, so a page costs what it reads, never an OFFSET, and rows inserted meanwhile (newer ids) never
-- shift later pages. Created-time bounds are id bounds ($2, $3: the smallest UUIDv7 of that millisecond). Every
-- filter is optional (NULL: no filter); the statement is planned with its values (unnamed statement), so an absent
-- filter folds away and the planner picks the index of the filters present: message_recipients (the recipient
-- lookup table), messages_reference (probed once per channel), messages_provider_id ($12), messages_tags,
-- messages_failed and messages_claim (their partial predicates are repeated here so they apply; $11 is true when
-- every status asked for is a failure status, $13 when every one is accepted or scheduled).
-- The recipient and reference lookups are ARRAY(...) sub-selects, computed once into an id list the primary key
-- is probed with: an `id IN (SELECT ...)` inside the `$9 IS NULL OR ...` form is not turned into a join (that
-- happens before the absent filters fold away), and stayed a filter on a walk of the whole table (7 s with 10
-- million messages).
-- Hot table and history alike (tidings.messages_all): each filter is pushed into both sides, the history's partitions
-- have the same indexes (message_history_*), and the newest-first walk is a merge of their primary keys. The
-- recipient lookup table only holds hot messages; in the history the phone number is indexed on the table itself
-- (message_history_recipient), and both give ids to the one list the primary keys are probed with.
SELECT id, channel, status::text AS status, use_case, priority, recipient, tags, reference, attempts, max_attempts,
       provider_message_id, last_error, scheduled_for, run_at, expires_at, created_at, updated_at
  FROM tidings.messages_all
 WHERE ($1::uuid IS NULL OR id < $1)
   AND ($2::uuid IS NULL OR id >= $2)
   AND ($3::uuid IS NULL OR id < $3)
   AND ($4::text[] IS NULL OR status::text = ANY ($4))
   AND (NOT $11::boolean OR status IN ('sending_failed', 'rejected', 'expired', 'delivery_failed', 'canceled'))
   AND (NOT $13::boolean OR status IN ('accepted', 'scheduled'))
   AND ($5::text IS NULL OR channel = $5)
   AND ($6::text IS NULL OR (tags @> ARRAY[$6::text] AND cardinality(tags) > 0))
   AND ($7::text IS NULL OR use_case = $7)
   AND ($8::text IS NULL OR (reference = $8 AND id = ANY (ARRAY(
           SELECT r.id FROM tidings.channels c, tidings.messages_all r WHERE r.channel = c.name AND r.reference = $8))))
   AND ($9::text[] IS NULL OR (recipient ->> 'phone' = ANY ($9::text[]) AND id = ANY (ARRAY(
           SELECT r.message_id FROM tidings.message_recipients r WHERE r.phone = ANY ($9::text[])
           UNION ALL
           SELECT h.id FROM tidings.message_history h
            WHERE h.recipient ? 'phone' AND left(h.recipient ->> 'phone', 64) COLLATE "C" = ANY ($9::text[])))))
   AND ($12::text IS NULL OR provider_message_id = $12)
 ORDER BY id DESC
 LIMIT $10
