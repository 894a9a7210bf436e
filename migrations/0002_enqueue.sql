-- The producer API: tidings.enqueue, tidings.enqueue_many, tidings.cancel, tidings.status, tidings.events.
-- One validation path: enqueue() builds a one-element batch and calls enqueue_many(), which validates every row
-- with tidings.check_message() and inserts the whole batch (messages + their first event) in one statement.
-- Bad input raises SQLSTATE 22023 with the message '<field>: <rule>' ('messages[N].<field>: <rule>' in a batch of
-- more than one), the field in the error's COLUMN and the rule in its DETAIL.

-- Limits of the scheduling rules (seed 002). The worker reads nothing of these: run_at carries the decision.
CREATE FUNCTION tidings.max_schedule_ahead() RETURNS interval LANGUAGE sql IMMUTABLE AS $$ SELECT interval '35 days' $$;
CREATE FUNCTION tidings.send_now_window() RETURNS interval LANGUAGE sql IMMUTABLE AS $$ SELECT interval '10 minutes' $$;

-- NULL when s is not a timestamp PostgreSQL can read.
CREATE FUNCTION tidings.try_timestamptz(s text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN s::timestamptz;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;

-- True when tz is an IANA zone name PostgreSQL knows (POSIX offsets such as '+3' are refused).
CREATE FUNCTION tidings.is_timezone(tz text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF tz IS NULL OR tz !~ '^[A-Za-z][A-Za-z0-9_+/-]{0,63}$' THEN
        RETURN false;
    END IF;
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    RETURN false;
END $$;

-- The helpers below never return NULL (a missing field is `NULL -> …`): `NOT NULL` would let a rule pass.
CREATE FUNCTION tidings.is_e164(v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_typeof(v) = 'string' AND (v #>> '{}') ~ '^\+[1-9][0-9]{6,14}$', false)
$$;

CREATE FUNCTION tidings.is_text(v jsonb, max_len integer DEFAULT 10000) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_typeof(v) = 'string' AND length(v #>> '{}') BETWEEN 1 AND max_len, false)
$$;

CREATE FUNCTION tidings.is_uuid_text(v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_typeof(v) = 'string'
       AND (v #>> '{}') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false)
$$;

-- Validation is written as SQL CASE expressions in LANGUAGE sql functions without sub-selects (declared STABLE,
-- as format() is), so PostgreSQL inlines them into enqueue_many's statement: one expression tree per row, no interpreter round trips. That
-- matters for bulk enqueue (tens of thousands of rows per second). Each CASE stops at the first broken rule, and
-- its WHEN order also guards the casts that follow it.

-- The name of the first key of obj not in allowed (called only once a key is known to be unknown).
CREATE FUNCTION tidings.unknown_field(obj jsonb, allowed text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT left(k, 64) FROM jsonb_object_keys(obj) k WHERE k <> ALL (allowed) LIMIT 1
$$;

-- Bird media parts (`image.images`, `file.files`): 1 to 10 items, each with an http(s) mediaUrl (and a
-- contentType for files), optional text.
CREATE FUNCTION tidings.check_bird_media(t text, part jsonb) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN NOT CASE WHEN jsonb_typeof(part -> (t || 's')) = 'array'
                      THEN jsonb_array_length(part -> (t || 's')) BETWEEN 1 AND 10 ELSE false END
            THEN format('content.body.%s.%ss: must be an array of 1 to 10 items', t, t)
        WHEN jsonb_path_exists(part -> (t || 's'),
                 '$[*] ? (!exists(@.mediaUrl) || @.mediaUrl.type() != "string" || !(@.mediaUrl like_regex "^https?://"))')
            THEN format('content.body.%s.%ss: every item needs an http(s) mediaUrl', t, t)
        WHEN t = 'file' AND jsonb_path_exists(part -> 'files',
                 '$[*] ? (!exists(@.contentType) || @.contentType.type() != "string")')
            THEN 'content.body.file.files: every item needs a contentType'
        WHEN part ? 'text' AND NOT tidings.is_text(part -> 'text')
            THEN format('content.body.%s.text: must be a string of 1 to 10000 characters', t)
    END
$$;

-- Bird-shaped content (seed 002), used by the bird_sms and sandbox kinds: exactly one of body or template.
CREATE FUNCTION tidings.check_bird_content(content jsonb) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN (content -> 'body' IS NULL) = (content -> 'template' IS NULL)
            THEN 'content: must have exactly one of body or template'
        WHEN content - '{body,template}'::text[] <> '{}'::jsonb
            THEN 'content: only body or template are allowed'
        WHEN content -> 'template' IS NOT NULL THEN CASE
            WHEN jsonb_typeof(content -> 'template') <> 'object' THEN 'content.template: must be an object'
            WHEN NOT tidings.is_uuid_text(content #> '{template,projectId}')
                THEN 'content.template.projectId: must be a UUID string'
            WHEN NOT tidings.is_text(content #> '{template,version}', 100)
                THEN 'content.template.version: must be a non-empty string'
            WHEN content -> 'template' ? 'locale' AND NOT tidings.is_text(content #> '{template,locale}', 35)
                THEN 'content.template.locale: must be a non-empty string'
            WHEN content -> 'template' ? 'parameters'
                 AND jsonb_typeof(content #> '{template,parameters}') <> 'array'
                THEN 'content.template.parameters: must be an array'
            END
        WHEN jsonb_typeof(content -> 'body') <> 'object' THEN 'content.body: must be an object'
        WHEN content #>> '{body,type}' = 'text' THEN CASE
            WHEN NOT tidings.is_text(content #> '{body,text,text}')
                THEN 'content.body.text.text: must be a string of 1 to 10000 characters'
            END
        WHEN content #>> '{body,type}' IN ('image', 'file')
            THEN tidings.check_bird_media(content #>> '{body,type}', content -> 'body' -> (content #>> '{body,type}'))
        ELSE 'content.body.type: must be one of text, image, file'
    END
$$;

-- The recipient and content shape of each channel kind. Returns '<field>: <rule>' or NULL.
CREATE FUNCTION tidings.check_shape(kind text, recipient jsonb, content jsonb) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN kind IN ('sandbox', 'bird_sms') THEN CASE
            WHEN NOT tidings.is_e164(recipient -> 'phone')
                THEN 'recipient.phone: must be an E.164 phone number such as +31612345678'
            ELSE tidings.check_bird_content(content)
            END
        WHEN kind = 'instaply_whatsapp' THEN CASE
            WHEN NOT (tidings.is_text(recipient -> 'customerThreadId', 64)
                      OR jsonb_typeof(recipient -> 'customerThreadId') = 'number')
                THEN 'recipient.customerThreadId: must be a thread id'
            WHEN NOT (content ? 'text' OR content ? 'contentSid')
                THEN 'content: must have text, contentSid (the fallback template), or both'
            WHEN content ? 'text' AND NOT tidings.is_text(content -> 'text')
                THEN 'content.text: must be a string of 1 to 10000 characters'
            WHEN content ? 'contentSid' AND NOT tidings.is_text(content -> 'contentSid', 64)
                THEN 'content.contentSid: must be a template id'
            WHEN content ? 'updateThreadStatus'
                 AND coalesce(content ->> 'updateThreadStatus', '') NOT IN ('waiting', 'replied', 'resolved')
                THEN 'content.updateThreadStatus: must be one of waiting, replied, resolved'
            END
        WHEN kind = 'insider_push' THEN CASE
            WHEN NOT CASE WHEN jsonb_typeof(recipient -> 'applicationIds') = 'array'
                          THEN jsonb_array_length(recipient -> 'applicationIds') > 0
                               AND NOT jsonb_path_exists(recipient -> 'applicationIds',
                                       '$[*] ? (@.type() != "string" || !(@ like_regex "^.{1,128}$" flag "s"))')
                          ELSE false END
                THEN 'recipient.applicationIds: must be a non-empty array of application ids'
            WHEN (recipient ? 'segmentId') = (recipient ? 'tableId')
                THEN 'recipient: must have exactly one of segmentId or tableId'
            WHEN NOT tidings.is_uuid_text(coalesce(recipient -> 'segmentId', recipient -> 'tableId'))
                THEN format('recipient.%s: must be a UUID string',
                            CASE WHEN recipient ? 'segmentId' THEN 'segmentId' ELSE 'tableId' END)
            WHEN (content ? 'content') = (content ? 'multiLangContent')
                THEN 'content: must have exactly one of content or multiLangContent'
            WHEN jsonb_typeof(coalesce(content -> 'content', content -> 'multiLangContent')) <> 'object'
                THEN format('content.%s: must be an object',
                            CASE WHEN content ? 'content' THEN 'content' ELSE 'multiLangContent' END)
            WHEN content ? 'onlyLastEngaged' AND jsonb_typeof(content -> 'onlyLastEngaged') <> 'boolean'
                THEN 'content.onlyLastEngaged: must be true or false'
            END
        WHEN kind = 'instant_app' THEN CASE
            WHEN NOT (jsonb_typeof(recipient -> 'phone') = 'string'
                      AND (recipient ->> 'phone') ~ '^(\+1)?[2-9][0-9]{9}$')
                THEN 'recipient.phone: must be a 10-digit US number or +1 followed by 10 digits'
            WHEN NOT tidings.is_text(content -> 'message', 1600)
                THEN 'content.message: must be a string of 1 to 1600 characters'
            WHEN NOT tidings.is_text(content -> 'instantAppSchemaApiId', 128)
                THEN 'content.instantAppSchemaApiId: must be a non-empty string'
            WHEN content ? 'instantAppParameters' AND jsonb_typeof(content -> 'instantAppParameters') <> 'object'
                THEN 'content.instantAppParameters: must be an object'
            END
        WHEN kind = 'webhook' THEN NULL -- any JSON object: the receiving gateway owns its schema
        ELSE format('channel: kind %L is not supported', kind)
    END
$$;

-- The rules that do not depend on the channel kind.
CREATE FUNCTION tidings.check_common(msg jsonb, now timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN coalesce(msg -> 'scheduled_for', 'null') <> 'null'
             AND (jsonb_typeof(msg -> 'scheduled_for') <> 'string'
                  OR (msg ->> 'scheduled_for') !~ '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d(:?\d\d)?)$'
                  OR tidings.try_timestamptz(msg ->> 'scheduled_for') IS NULL)
            THEN 'scheduled_for: must be an RFC 3339 timestamp with a time zone offset'
        WHEN coalesce(msg -> 'scheduled_for', 'null') <> 'null'
             AND tidings.try_timestamptz(msg ->> 'scheduled_for') > now + tidings.max_schedule_ahead()
            THEN 'scheduled_for: must be at most 35 days ahead'
        WHEN coalesce(msg -> 'validity', 'null') <> 'null'
             AND (jsonb_typeof(msg -> 'validity') <> 'number' OR (msg ->> 'validity') !~ '^-?[0-9]+$')
            THEN 'validity: must be a whole number of seconds'
        WHEN coalesce(msg -> 'validity', 'null') <> 'null' AND (msg ->> 'validity')::numeric <= 0
            THEN 'validity: must be positive'
        WHEN coalesce(msg -> 'validity', 'null') <> 'null' AND (msg ->> 'validity')::numeric > 2592000
            THEN 'validity: must be at most 2592000 seconds (30 days)'
        WHEN coalesce(msg -> 'priority', 'null') <> 'null'
             AND (jsonb_typeof(msg -> 'priority') <> 'number' OR (msg ->> 'priority') !~ '^[0-9]$')
            THEN 'priority: must be a whole number from 0 (first) to 9 (last)'
        WHEN coalesce(msg -> 'ignore_quiet_hours', 'null') <> 'null'
             AND jsonb_typeof(msg -> 'ignore_quiet_hours') <> 'boolean'
            THEN 'ignore_quiet_hours: must be true or false'
        WHEN coalesce(msg -> 'cap_frequency', 'null') <> 'null' AND jsonb_typeof(msg -> 'cap_frequency') <> 'boolean'
            THEN 'cap_frequency: must be true or false'
        WHEN msg -> 'cap_frequency' = 'true' AND coalesce(msg ->> 'use_case', 'transactional') <> 'marketing'
            THEN 'cap_frequency: only allowed with use_case marketing'
        WHEN coalesce(msg -> 'tags', 'null') <> 'null' AND jsonb_typeof(msg -> 'tags') <> 'array'
            THEN 'tags: must be an array of strings'
        WHEN CASE WHEN jsonb_typeof(msg -> 'tags') = 'array' THEN jsonb_array_length(msg -> 'tags') > 10 END
            THEN 'tags: at most 10 tags per message'
        WHEN jsonb_typeof(msg -> 'tags') = 'array'
             AND jsonb_path_exists(msg -> 'tags', '$[*] ? (@.type() != "string" || !(@ like_regex "^.{1,100}$" flag "s"))')
            THEN 'tags: every tag must be a string of 1 to 100 characters'
        WHEN coalesce(msg -> 'reference', 'null') <> 'null' AND NOT tidings.is_text(msg -> 'reference', 255)
            THEN 'reference: must be a string of 1 to 255 characters'
    END
$$;

-- Structural validation of one enqueue request against its channel's kind. Returns '<field>: <rule>' or NULL.
-- `kind` is NULL when the channel does not exist.
CREATE FUNCTION tidings.check_message(msg jsonb, kind text, now timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(msg) IS DISTINCT FROM 'object' THEN 'message: must be a JSON object'
        WHEN msg - '{channel,recipient,content,scheduled_for,validity,use_case,ignore_quiet_hours,cap_frequency,priority,tags,reference}'::text[]
             <> '{}'::jsonb
            THEN tidings.unknown_field(msg, '{channel,recipient,content,scheduled_for,validity,use_case,ignore_quiet_hours,cap_frequency,priority,tags,reference}')
                 || ': unknown field'
        WHEN NOT tidings.is_text(msg -> 'channel', 63) THEN 'channel: must be a channel name'
        WHEN kind IS NULL THEN format('channel: unknown channel %L', left(msg ->> 'channel', 63))
        WHEN coalesce(msg -> 'use_case', 'null') <> 'null' AND jsonb_typeof(msg -> 'use_case') <> 'string'
            THEN 'use_case: must be a string'
        WHEN coalesce(msg ->> 'use_case', 'transactional')
             NOT IN ('transactional', 'promotional', 'conversational', 'marketing', '2fa')
            THEN 'use_case: must be one of transactional, promotional, conversational, marketing, 2fa'
        WHEN jsonb_typeof(msg -> 'recipient') IS DISTINCT FROM 'object' THEN 'recipient: must be a JSON object'
        WHEN jsonb_typeof(msg -> 'content') IS DISTINCT FROM 'object' THEN 'content: must be a JSON object'
        WHEN pg_column_size(msg -> 'content') > 65536 THEN 'content: must be at most 64 KiB'
        WHEN pg_column_size(msg -> 'recipient') > 4096 THEN 'recipient: must be at most 4 KiB'
        WHEN msg -> 'recipient' ? 'timezone' AND NOT tidings.is_timezone(msg #>> '{recipient,timezone}')
            THEN 'recipient.timezone: must be an IANA time zone name such as Europe/Paris'
        ELSE coalesce(tidings.check_shape(kind, msg -> 'recipient', msg -> 'content'), tidings.check_common(msg, now))
    END
$$;

-- Raises the validation error for one problem. `pos` (1-based) is NULL for a single enqueue.
CREATE FUNCTION tidings.raise_invalid(problem text, pos bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    field text := split_part(problem, ': ', 1);
    rule text := substr(problem, length(field) + 3);
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = '22023',
        MESSAGE = CASE WHEN pos IS NULL THEN problem ELSE format('messages[%s].%s', pos - 1, problem) END,
        COLUMN = field,
        DETAIL = rule;
END $$;

-- Enqueue a batch: a JSON array of objects with the keys of tidings.enqueue()'s parameters. Returns the ids in
-- input order. All or nothing: one bad message fails the whole call. A (channel, reference) seen before returns the
-- first message's id and inserts nothing.
CREATE FUNCTION tidings.enqueue_many(messages jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t timestamptz := now();
    ids uuid[];
    any_due boolean;
    single boolean;
BEGIN
    IF jsonb_typeof(messages) IS DISTINCT FROM 'array' THEN
        PERFORM tidings.raise_invalid('messages: must be a JSON array of messages', NULL);
    END IF;
    IF jsonb_array_length(messages) > 100000 THEN
        PERFORM tidings.raise_invalid('messages: at most 100000 messages per call', NULL);
    END IF;
    single := jsonb_array_length(messages) = 1;

    WITH input AS (
        SELECT e.ord, e.msg, c.kind, c.policy,
               tidings.check_message(e.msg, c.kind, t) AS problem
          FROM jsonb_array_elements(messages) WITH ORDINALITY AS e(msg, ord)
          LEFT JOIN tidings.channels c ON c.name = e.msg ->> 'channel'
    ), valid AS (
        SELECT i.ord, i.msg, i.policy,
               coalesce(i.msg ->> 'use_case', 'transactional') AS use_case,
               (i.msg ->> 'scheduled_for')::timestamptz AS scheduled_for
          FROM input i
         WHERE i.problem IS NULL OR tidings.raise_invalid(i.problem, CASE WHEN NOT single THEN i.ord END)
    ), planned AS (
        SELECT v.ord, tidings.uuid_v7() AS id, v.msg ->> 'channel' AS channel,
               v.msg -> 'recipient' AS recipient, v.msg -> 'content' AS content, v.use_case,
               CASE WHEN v.scheduled_for > t + tidings.send_now_window() THEN 'scheduled' ELSE 'accepted' END::tidings.status AS status,
               coalesce((v.msg ->> 'priority')::smallint, 0) AS priority,
               v.scheduled_for,
               CASE WHEN v.scheduled_for > t + tidings.send_now_window() THEN v.scheduled_for ELSE t END AS run_at,
               greatest(t, v.scheduled_for) + make_interval(secs => coalesce(
                   (v.msg ->> 'validity')::integer,
                   (v.policy -> 'validity' ->> v.use_case)::integer,
                   CASE WHEN v.use_case = '2fa' THEN 600 ELSE 129600 END)) AS expires_at,
               coalesce((v.msg ->> 'ignore_quiet_hours')::boolean, false) AS ignore_quiet_hours,
               coalesce((v.msg ->> 'cap_frequency')::boolean, false) AS cap_frequency,
               coalesce(ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(
                   CASE WHEN jsonb_typeof(v.msg -> 'tags') = 'array' THEN v.msg -> 'tags' END) x), '{}') AS tags,
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

-- Enqueue one message. Named parameters with defaults; usable inside any transaction (rollback = nothing queued).
CREATE FUNCTION tidings.enqueue(
    channel            text,
    recipient          jsonb,
    content            jsonb,
    scheduled_for      timestamptz DEFAULT NULL,
    validity           integer     DEFAULT NULL,
    use_case           text        DEFAULT 'transactional',
    ignore_quiet_hours boolean     DEFAULT false,
    cap_frequency      boolean     DEFAULT false,
    priority           integer     DEFAULT 0,
    tags               text[]      DEFAULT '{}',
    reference          text        DEFAULT NULL
) RETURNS uuid
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tidings.enqueue_many(jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
        'channel', channel, 'recipient', recipient, 'content', content,
        'scheduled_for', to_jsonb(scheduled_for), 'validity', validity, 'use_case', use_case,
        'ignore_quiet_hours', ignore_quiet_hours, 'cap_frequency', cap_frequency, 'priority', priority,
        'tags', to_jsonb(tags), 'reference', reference))))
$$;

-- Cancel a message that no worker holds yet. Returns false when it is processing or already finished.
CREATE FUNCTION tidings.cancel(message_id uuid) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH c AS (
        UPDATE tidings.messages m SET status = 'canceled', updated_at = now(), run_at = now()
         WHERE m.id = message_id AND m.status IN ('accepted', 'scheduled')
        RETURNING m.id, m.attempts
    ), ev AS (
        INSERT INTO tidings.message_events (message_id, status, reason, attempt)
        SELECT id, 'canceled', 'canceled_by_producer', attempts FROM c
    )
    SELECT EXISTS (SELECT 1 FROM c)
$$;

-- A message's state without its recipient or content (what a producer may read).
CREATE FUNCTION tidings.status(message_id uuid)
RETURNS TABLE (id uuid, channel text, status tidings.status, attempts integer, run_at timestamptz,
               expires_at timestamptz, provider_message_id text, last_error text, created_at timestamptz,
               updated_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.id, m.channel, m.status, m.attempts, m.run_at, m.expires_at, m.provider_message_id, m.last_error,
           m.created_at, m.updated_at
      FROM tidings.messages m WHERE m.id = message_id
$$;

-- A message's event history, oldest first.
CREATE FUNCTION tidings.events(message_id uuid)
RETURNS TABLE (at timestamptz, status tidings.status, reason text, attempt integer, started_at timestamptz, detail jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.at, e.status, e.reason, e.attempt, e.started_at, e.detail
      FROM tidings.message_events e WHERE e.message_id = events.message_id ORDER BY e.id
$$;

-- Roles. Cluster-wide, so created only when missing; a migrating user without CREATEROLE gets a notice instead.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_producer') THEN
        CREATE ROLE tidings_producer NOLOGIN;
    END IF;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'tidings: could not create role tidings_producer (needs CREATEROLE); create it by hand';
    WHEN duplicate_object OR unique_violation THEN
        NULL; -- created meanwhile by a concurrent migration of another database
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tidings FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_producer') THEN
        GRANT USAGE ON SCHEMA tidings TO tidings_producer;
        GRANT EXECUTE ON FUNCTION tidings.enqueue(text, jsonb, jsonb, timestamptz, integer, text, boolean, boolean,
                                                  integer, text[], text),
                                  tidings.enqueue_many(jsonb), tidings.cancel(uuid), tidings.status(uuid),
                                  tidings.events(uuid)
              TO tidings_producer;
    END IF;
END $$;
