-- Issue 13, item 6: `SELECT * FROM tidings.status('<id>')` failed with 22P02 because the enum type and the
-- function shared the name `tidings.status`: PostgreSQL reads `name('literal')` as a cast to the type first. The
-- type is renamed; the functions keep their names. Column and return types refer to the type by oid and follow
-- the rename; function bodies are text, so every function whose body names the type is re-created below
-- (only enqueue_many does: `SELECT p.oid::regprocedure FROM pg_proc p WHERE prosrc ~ 'tidings\.status\M'`).
ALTER TYPE tidings.status RENAME TO message_status;

-- As in 0005, with the status cast naming the new type. CREATE OR REPLACE resets the function's settings, so the
-- generic plan of 0006 is set again here.
CREATE OR REPLACE FUNCTION tidings.enqueue_many(messages jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t timestamptz := now();
    ids uuid[];
    any_due boolean;
    single boolean;
    id_prefix text;
BEGIN
    IF jsonb_typeof(messages) IS DISTINCT FROM 'array' THEN
        PERFORM tidings.raise_invalid('messages: must be a JSON array of messages', NULL);
    END IF;
    IF jsonb_array_length(messages) > 100000 THEN
        PERFORM tidings.raise_invalid('messages: at most 100000 messages per call', NULL);
    END IF;
    single := jsonb_array_length(messages) = 1;
    -- 12 hex digits of Unix milliseconds, '7', then 15 random hex digits with the variant bits (10xx) forced
    -- into the first of the last 16; the row's position fills the last 5 hex digits.
    id_prefix := (SELECT lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
                         || '7' || substr(r, 1, 3)
                         || to_hex(8 + (get_byte(decode(substr(r, 4, 2), 'hex'), 0) & 3))
                         || substr(r, 6, 10)
                    FROM (SELECT replace(gen_random_uuid()::text, '-', '') AS r) g);

    WITH input AS (
        SELECT e.ord, e.msg, e.recipient, e.content, c.kind, c.policy,
               tidings.check_parts(e.msg, e.recipient, e.content, c.kind, t) AS problem
          FROM (SELECT x.msg, x.ord, x.msg -> 'recipient' AS recipient, x.msg -> 'content' AS content
                  FROM jsonb_array_elements(messages) WITH ORDINALITY AS x(msg, ord)
                OFFSET 0) e
          LEFT JOIN tidings.channels c ON c.name = e.msg ->> 'channel'
    ), valid AS (
        SELECT i.ord, i.msg, i.recipient, i.content, i.policy,
               coalesce(i.msg ->> 'use_case', 'transactional') AS use_case,
               (i.msg ->> 'scheduled_for')::timestamptz AS scheduled_for
          FROM input i
         WHERE i.problem IS NULL OR tidings.raise_invalid(i.problem, CASE WHEN NOT single THEN i.ord END)
    ), planned AS (
        SELECT v.ord, (id_prefix || lpad(to_hex(v.ord), 5, '0'))::uuid AS id, v.msg ->> 'channel' AS channel,
               v.recipient, v.content, v.use_case,
               CASE WHEN v.scheduled_for > t + tidings.send_now_window() THEN 'scheduled' ELSE 'accepted' END::tidings.message_status AS status,
               coalesce((v.msg ->> 'priority')::smallint, 0) AS priority,
               v.scheduled_for,
               CASE WHEN v.scheduled_for > t + tidings.send_now_window() THEN v.scheduled_for ELSE t END AS run_at,
               greatest(t, v.scheduled_for) + make_interval(secs => coalesce(
                   (v.msg ->> 'validity')::integer,
                   (v.policy -> 'validity' ->> v.use_case)::integer,
                   CASE WHEN v.use_case = '2fa' THEN 600 ELSE 129600 END)) AS expires_at,
               coalesce((v.msg ->> 'ignore_quiet_hours')::boolean, false) AS ignore_quiet_hours,
               coalesce((v.msg ->> 'cap_frequency')::boolean, false) AS cap_frequency,
               CASE WHEN jsonb_typeof(v.msg -> 'tags') = 'array'
                    THEN ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(v.msg -> 'tags') x)
                    ELSE '{}' END AS tags,
               v.msg ->> 'reference' AS reference,
               coalesce((v.policy ->> 'max_attempts')::integer, 10) AS max_attempts
          FROM valid v
    ), plain AS (
        -- Without a reference there is nothing to conflict with: a plain insert (no speculative insertion).
        INSERT INTO tidings.messages AS m (id, channel, recipient, content, use_case, status, priority, scheduled_for,
                                           run_at, expires_at, ignore_quiet_hours, cap_frequency, tags, reference,
                                           max_attempts, created_at, updated_at)
        SELECT id, channel, recipient, content, use_case, status, priority, scheduled_for, run_at, expires_at,
               ignore_quiet_hours, cap_frequency, tags, reference, max_attempts, t, t
          FROM planned
         WHERE reference IS NULL
         ORDER BY ord
        RETURNING m.id, m.status, m.channel, m.reference
    ), referenced AS (
        INSERT INTO tidings.messages AS m (id, channel, recipient, content, use_case, status, priority, scheduled_for,
                                           run_at, expires_at, ignore_quiet_hours, cap_frequency, tags, reference,
                                           max_attempts, created_at, updated_at)
        SELECT id, channel, recipient, content, use_case, status, priority, scheduled_for, run_at, expires_at,
               ignore_quiet_hours, cap_frequency, tags, reference, max_attempts, t, t
          FROM planned
         WHERE reference IS NOT NULL
         ORDER BY ord
        ON CONFLICT (channel, reference) WHERE reference IS NOT NULL DO NOTHING
        RETURNING m.id, m.status, m.channel, m.reference
    ), ins AS (
        SELECT * FROM plain UNION ALL SELECT * FROM referenced
    ), ev AS (
        INSERT INTO tidings.message_events (message_id, at, status, reason)
        SELECT id, t, status, 'enqueued' FROM ins
    )
    SELECT array_agg(coalesce(
               i.id,
               (SELECT i2.id FROM ins i2 WHERE i2.channel = p.channel AND i2.reference = p.reference),
               (SELECT m.id FROM tidings.messages m WHERE m.channel = p.channel AND m.reference = p.reference))
           ORDER BY p.ord),
           coalesce(bool_or(i.status = 'accepted'), false)
      INTO ids, any_due
      FROM planned p
      LEFT JOIN ins i ON i.id = p.id;

    -- One wake-up per transaction: PostgreSQL folds identical notifications of one transaction into one.
    IF any_due THEN
        PERFORM pg_notify('tidings', '');
    END IF;
    RETURN QUERY SELECT unnest(ids);
END $$;
