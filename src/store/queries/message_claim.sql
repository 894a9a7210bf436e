-- Claim up to $1 due messages of the channels in $4 for lease $2, held for $3 milliseconds.
-- The CTE picks and locks rows with FOR UPDATE SKIP LOCKED, so concurrent workers neither wait on each other
-- nor take the same row; it walks the partial index messages_claim in its own order (priority, run_at) and
-- stops after $1 rows. Paused channels (after a 429) are skipped for every worker on every host.
-- Plan shape matters (EXPLAIN on a 100k backlog): the pause check is an anti-join, which the planner estimates
-- well (a `<> ALL (ARRAY(...))` filter was estimated at 1 row and turned the claim into a bitmap scan plus a
-- sort of the whole backlog: 47 ms instead of 8 ms per 1000 rows); and the UPDATE matches `id = ANY (ARRAY(...))`
-- so even a generic plan (unknown LIMIT) goes through the primary key instead of hashing the whole table.
-- No event row: the outcome's event records when the attempt started (started_at).
-- The RETURNING list is decoded by position (`Message::from_row`): change both together.
-- `suppressed`: the recipient opted out for this channel kind (checked here, at dispatch, so a late STOP wins);
-- the opt-out list is probed only when it is not empty (the EXISTS over the whole list is an InitPlan, run once).
-- The list ends here for a worker with traces off; with traces on, message_claim_trace.sql is appended to it
-- (the producer's trace context, two columns a worker with traces off neither receives nor decodes).
WITH due AS (
    SELECT id
      FROM tidings.messages due_row
     WHERE status IN ('accepted', 'scheduled')
       AND run_at <= now()
       AND channel = ANY ($4::text[])
       AND NOT EXISTS (SELECT 1 FROM tidings.channel_state s WHERE s.channel = due_row.channel AND s.paused_until > now())
     ORDER BY priority, run_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE tidings.messages m
   SET status = 'processing',
       lease_id = $2,
       locked_until = now() + make_interval(secs => $3::double precision / 1000),
       updated_at = now()
 WHERE m.id = ANY (ARRAY(SELECT id FROM due))
RETURNING m.id, m.channel, m.recipient, m.content, m.use_case, m.priority, m.scheduled_for, m.run_at,
          m.expires_at, m.ignore_quiet_hours, m.cap_frequency, m.tags, m.attempts, m.max_attempts,
          m.created_at, m.lease_id,
          CASE WHEN (SELECT EXISTS (SELECT 1 FROM tidings.suppressions))
               THEN EXISTS (SELECT 1
                              FROM tidings.suppressions s
                              JOIN tidings.channels c ON c.kind = s.channel_kind
                             WHERE c.name = m.channel AND s.recipient = tidings.recipient_key(m.recipient))
               ELSE false END AS suppressed
