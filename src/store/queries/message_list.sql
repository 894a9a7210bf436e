-- One page of the message list, newest first, for `GET /v1/messages`. Keyset pagination on the primary key
-- (UUIDv7 ids are time-ordered): $1 is the last id of the previous page, so a page costs what it reads, never an
-- OFFSET, and rows inserted meanwhile (newer ids) never shift later pages. Created-time bounds are id bounds ($2,
-- $3: the smallest UUIDv7 of that millisecond). Every filter is optional (NULL: no filter); the statement is
-- planned with its values (unnamed statement), so an absent filter folds away and the planner picks the index of
-- the filters present: message_recipients (the recipient lookup table), messages_provider_id ($12), messages_tags and messages_failed (whose partial predicates are
-- repeated here so they apply; $11 is true when every status asked for is a failure status), messages_reference,
-- or else the primary key walked backwards.
SELECT id, channel, status::text AS status, use_case, priority, recipient, tags, reference, attempts, max_attempts,
       provider_message_id, last_error, scheduled_for, run_at, expires_at, created_at, updated_at
  FROM tidings.messages
 WHERE ($1::uuid IS NULL OR id < $1)
   AND ($2::uuid IS NULL OR id >= $2)
   AND ($3::uuid IS NULL OR id < $3)
   AND ($4::text[] IS NULL OR status::text = ANY ($4))
   AND (NOT $11::boolean OR status IN ('sending_failed', 'rejected', 'expired', 'delivery_failed', 'canceled'))
   AND ($5::text IS NULL OR channel = $5)
   AND ($6::text IS NULL OR (tags @> ARRAY[$6::text] AND cardinality(tags) > 0))
   AND ($7::text IS NULL OR use_case = $7)
   AND ($8::text IS NULL OR reference = $8)
   AND ($9::text[] IS NULL OR (id IN (SELECT r.message_id FROM tidings.message_recipients r WHERE r.phone = ANY ($9::text[])) AND recipient ->> 'phone' = ANY ($9::text[])))
   AND ($12::text IS NULL OR provider_message_id = $12)
 ORDER BY id DESC
 LIMIT $10
