-- Operator cancel (API and CLI, by id or by filter): waiting messages (accepted, scheduled) become canceled.
-- Parameters: the filter of message_list.sql ($1 one id, $2/$3 id bounds, $4 statuses, $5 channel, $6 tag,
-- $7 use case, $8 reference, $9 recipient phone numbers (the last two as id lists: see message_list.sql); NULL: no
-- filter), $10 dry run, $11 the count the operator expects
-- (NULL: any), $12 the token name (recorded in the event's detail),
-- $13 unused (reschedule's time), $14 the provider's message id (NULL: no filter).
-- The matching rows are locked (FOR UPDATE: a worker's claim, with SKIP LOCKED, passes them by; a row a claim took
-- first no longer matches when re-checked) and counted; only when it is not a dry run and the count is the
-- expected one are they changed, each with its event in this statement. Returns (matched, changed).
-- By id ($1): the first message of a fallback chain brings the chain's waiting steps along (chain_id = $1).
WITH target AS (
    SELECT m.id
      FROM tidings.messages m
     WHERE m.status IN ('accepted', 'scheduled')
   AND ($1::uuid IS NULL OR m.id = $1 OR m.chain_id = $1)
   AND ($2::uuid IS NULL OR m.id >= $2)
   AND ($3::uuid IS NULL OR m.id < $3)
   AND ($4::text[] IS NULL OR m.status::text = ANY ($4))
   AND ($5::text IS NULL OR m.channel = $5)
   AND ($6::text IS NULL OR (m.tags @> ARRAY[$6::text] AND cardinality(m.tags) > 0))
   AND ($7::text IS NULL OR m.use_case = $7)
   AND ($8::text IS NULL OR (m.reference = $8 AND m.id = ANY (ARRAY(
           SELECT r.id FROM tidings.channels c, tidings.messages r WHERE r.channel = c.name AND r.reference = $8))))
   AND ($9::text[] IS NULL OR (m.recipient ->> 'phone' = ANY ($9::text[]) AND m.id = ANY (ARRAY(
           SELECT r.message_id FROM tidings.message_recipients r WHERE r.phone = ANY ($9::text[])))))
   AND ($14::text IS NULL OR m.provider_message_id = $14)
       FOR UPDATE
), n AS (
    SELECT count(*) AS matched FROM target
), changed AS (
    UPDATE tidings.messages m
       SET status = 'canceled', run_at = now(), updated_at = now()
      FROM target t
     WHERE m.id = t.id AND NOT $10 AND ($11::bigint IS NULL OR (SELECT matched FROM n) = $11)
    RETURNING m.id, m.status, m.attempts
), ev AS (
    INSERT INTO tidings.message_events (message_id, status, reason, attempt, detail)
    SELECT id, status, 'operator_cancel', attempts, jsonb_build_object('by', $12::text) FROM changed
)
SELECT (SELECT matched FROM n), (SELECT count(*) FROM changed)
