-- The enqueue surface for three features, in one place so that each adds only its own rules and machinery:
--   callback_url            status callbacks to the producer's app (issue 14, item 6);
--   fallback (+ chain_id)   a chain of next steps on other channels (issue 17);
--   traceparent, tracestate the producer's W3C trace context (issue 18).
-- All four are optional keys of an enqueue_many message and named parameters of tidings.enqueue. A message without
-- any of them takes the same path as before (the `opts` test below), so bulk enqueue pays nothing for them.

ALTER TABLE tidings.messages
    ADD COLUMN callback_url text,
    ADD COLUMN fallback     jsonb,
    ADD COLUMN chain_id     uuid,
    ADD COLUMN traceparent  text,
    ADD COLUMN tracestate   text;

COMMENT ON COLUMN tidings.messages.callback_url IS 'Where status callbacks for this message are POSTed (besides the channel''s).';
COMMENT ON COLUMN tidings.messages.fallback IS 'The steps still to come of this message''s fallback chain.';
COMMENT ON COLUMN tidings.messages.chain_id IS 'The id of the first message of this message''s fallback chain.';
COMMENT ON COLUMN tidings.messages.traceparent IS 'The producer''s W3C traceparent at enqueue.';

-- Hosts a per-message callback_url may name, synced from the config file ([callbacks] allowed_hosts) by
-- `tidings migrate`, `tidings serve` and worker start, like tidings.channels. An entry is a host name (exact,
-- case-insensitive) or a "*.example.com" suffix pattern (any subdomain, not the apex).
CREATE TABLE tidings.callback_hosts (
    pattern text PRIMARY KEY CHECK (pattern = lower(pattern) AND pattern ~ '^(\*\.)?[a-z0-9.-]+(:[0-9]+)?$')
);

-- W3C Trace Context, level 1 (https://www.w3.org/TR/trace-context/#traceparent-header): version 00 is exactly
-- four fields; a later version may append fields and is read by its first four. Version ff, an all-zero trace id
-- and an all-zero parent id are invalid.
CREATE FUNCTION tidings.is_traceparent(v text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT v ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[^ ]*)?$'
       AND left(v, 2) <> 'ff'
       AND (left(v, 2) <> '00' OR length(v) = 55)
       AND substr(v, 4, 32) <> repeat('0', 32)
       AND substr(v, 37, 16) <> repeat('0', 16)
$$;

-- The host (with its port, when given) of an http(s) URL, lower-cased; NULL when it is not one.
CREATE FUNCTION tidings.url_host(url text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT lower(substring(url FROM '^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9.-]+(?::[0-9]{1,5})?)(?:[/?#][^ ]*)?$'))
$$;

-- Whether a callback URL's host is allowed: an exact entry matches the host with or without its port (an entry
-- with a port only that port); "*.example.com" matches any subdomain.
CREATE FUNCTION tidings.callback_host_allowed(host text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM tidings.callback_hosts h
         WHERE h.pattern = host
            OR h.pattern = split_part(host, ':', 1)
            OR (h.pattern LIKE '*.%' AND split_part(host, ':', 1) LIKE '%' || substr(h.pattern, 2)))
$$;

-- The fallback chain's rules. Issue 17 replaces this function with the real rules; until then a chain is refused
-- with a clear error rather than accepted and ignored.
CREATE FUNCTION tidings.check_fallback(msg jsonb, kind text, now timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN coalesce(msg -> 'fallback', 'null') <> 'null'
                THEN 'fallback: fallback chains are not supported by this version' END
$$;

-- The rules of the four keys above. Returns '<field>: <rule>' or NULL, as check_common does.
CREATE FUNCTION tidings.check_extras(msg jsonb, kind text, now timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN coalesce(msg -> 'callback_url', 'null') <> 'null'
             AND (jsonb_typeof(msg -> 'callback_url') <> 'string' OR length(msg ->> 'callback_url') > 2048
                  OR tidings.url_host(msg ->> 'callback_url') IS NULL)
            THEN 'callback_url: must be an http or https URL of at most 2048 characters'
        WHEN coalesce(msg -> 'callback_url', 'null') <> 'null'
             AND NOT tidings.callback_host_allowed(tidings.url_host(msg ->> 'callback_url'))
            THEN format('callback_url: host %L is not in [callbacks] allowed_hosts',
                        left(tidings.url_host(msg ->> 'callback_url'), 100))
        WHEN coalesce(msg -> 'traceparent', 'null') <> 'null'
             AND (jsonb_typeof(msg -> 'traceparent') <> 'string' OR NOT tidings.is_traceparent(msg ->> 'traceparent'))
            THEN 'traceparent: must be a W3C traceparent (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>)'
        WHEN coalesce(msg -> 'tracestate', 'null') <> 'null'
             AND (jsonb_typeof(msg -> 'tracestate') <> 'string' OR length(msg ->> 'tracestate') > 512
                  OR (msg ->> 'tracestate') !~ '^[\x20-\x7e]*$')
            THEN 'tracestate: must be a W3C tracestate of at most 512 printable ASCII characters'
        WHEN coalesce(msg -> 'tracestate', 'null') <> 'null' AND coalesce(msg -> 'traceparent', 'null') = 'null'
            THEN 'tracestate: only allowed with a traceparent'
        ELSE tidings.check_fallback(msg, kind, now)
    END
$$;

REVOKE ALL ON FUNCTION tidings.is_traceparent(text), tidings.url_host(text), tidings.callback_host_allowed(text),
                       tidings.check_fallback(jsonb, text, timestamptz), tidings.check_extras(jsonb, text, timestamptz)
    FROM PUBLIC;

-- As in 0007, accepting the four keys.
CREATE OR REPLACE FUNCTION tidings.check_parts(msg jsonb, recipient jsonb, content jsonb, kind text, now timestamptz)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(msg) IS DISTINCT FROM 'object' THEN 'message: must be a JSON object'
        WHEN msg - '{channel,recipient,content,scheduled_for,validity,use_case,ignore_quiet_hours,cap_frequency,priority,tags,reference,callback_url,fallback,traceparent,tracestate}'::text[]
             <> '{}'::jsonb
            THEN tidings.unknown_field(msg, '{channel,recipient,content,scheduled_for,validity,use_case,ignore_quiet_hours,cap_frequency,priority,tags,reference,callback_url,fallback,traceparent,tracestate}')
                 || ': unknown field'
        WHEN NOT tidings.is_text(msg -> 'channel', 63) THEN 'channel: must be a channel name'
        WHEN kind IS NULL THEN format('channel: unknown channel %L', left(msg ->> 'channel', 63))
        WHEN coalesce(msg -> 'use_case', 'null') <> 'null' AND jsonb_typeof(msg -> 'use_case') <> 'string'
            THEN 'use_case: must be a string'
        WHEN coalesce(msg ->> 'use_case', 'transactional')
             NOT IN ('transactional', 'promotional', 'conversational', 'marketing', '2fa')
            THEN 'use_case: must be one of transactional, promotional, conversational, marketing, 2fa'
        WHEN jsonb_typeof(recipient) IS DISTINCT FROM 'object' THEN 'recipient: must be a JSON object'
        WHEN jsonb_typeof(content) IS DISTINCT FROM 'object' THEN 'content: must be a JSON object'
        WHEN pg_column_size(content) > 65536 THEN 'content: must be at most 64 KiB'
        WHEN pg_column_size(recipient) > 4096 THEN 'recipient: must be at most 4 KiB'
        ELSE coalesce(
            -- Both are rare, so one cheap pass over the whole message decides whether each part must say which:
            -- four passes (depth and numbers, per part) cost about 1.2 us per message, a tenth of bulk enqueue.
            -- `.abs()` is the cheapest number test (it fails, so filters out, on anything but a number). Nothing
            -- is 33 levels deep in fewer than 268 bytes of jsonb (8 per level: a container's header and its
            -- entry in the parent), so small messages skip the depth pass.
            CASE WHEN jsonb_path_exists(msg, 'strict $.** ? (@.abs() > 1e308)')
                      OR (pg_column_size(recipient) + pg_column_size(content) >= 264
                          AND jsonb_path_exists(msg, 'strict $.*.**{33}'))
                 THEN coalesce(tidings.check_representable('recipient', recipient),
                               tidings.check_representable('content', content)) END,
            CASE WHEN recipient ? 'timezone' AND NOT tidings.is_timezone(recipient ->> 'timezone')
                 THEN 'recipient.timezone: must be an IANA time zone name' END,
            tidings.check_shape(kind, recipient, content),
            CASE WHEN msg ?| '{scheduled_for,validity,priority,ignore_quiet_hours,cap_frequency,tags,reference}'::text[]
                 THEN tidings.check_common(msg, now) END,
            CASE WHEN msg ?| '{callback_url,fallback,traceparent,tracestate}'::text[]
                 THEN tidings.check_extras(msg, kind, now) END)
    END
$$;


-- As in 0007, storing the four keys; a message with a fallback chain is the first of its chain (chain_id = id).
-- CREATE OR REPLACE resets a function's settings, so 0006's generic plan is set again here.
CREATE OR REPLACE FUNCTION tidings.enqueue_many(messages jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t timestamptz := now();
    ids uuid[];
    any_due boolean;
    single boolean;
    n integer;
    ms bigint;
    head text;
    rnd bytea;
BEGIN
    IF jsonb_typeof(messages) IS DISTINCT FROM 'array' THEN
        PERFORM tidings.raise_invalid('messages: must be a JSON array of messages', NULL);
    END IF;
    IF jsonb_array_length(messages) > 100000 THEN
        PERFORM tidings.raise_invalid('messages: at most 100000 messages per call', NULL);
    END IF;
    n := jsonb_array_length(messages);
    single := n = 1;
    -- Ids (RFC 9562 UUIDv7): 48 bits of Unix milliseconds, version 7, the message's position in the call in the
    -- 12 bits of rand_a (RFC 9562 6.2, method 1: a counter; after 4096 messages the millisecond steps on, so the
    -- ids of a call follow input order and run at most 25 ms ahead for 100000 messages), the variant, and 62
    -- random bits per message. Those come from SHA-512 in counter mode over a fresh 244-bit seed from
    -- gen_random_uuid() (the Hash_DRBG construction of NIST SP 800-90A): one id reveals nothing of another,
    -- and eight messages share one hash. gen_random_uuid() per message costs ~1.5 us each (OpenSSL RAND_bytes
    -- per call), more than the rest of the id; the stream costs ~0.2 us per message.
    ms := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    head := lpad(to_hex(ms), 12, '0') || '7';
    rnd := (SELECT string_agg(sha512(s.seed || int4send(g)), ''::bytea)
              FROM (SELECT uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) AS seed) s,
                   generate_series(0, (n - 1) / 8) g);

    WITH input AS (
        SELECT e.ord, e.msg, e.recipient, e.content, c.kind, c.policy,
               tidings.check_parts(e.msg, e.recipient, e.content, c.kind, t) AS problem
          FROM (SELECT x.msg, x.ord, x.msg -> 'recipient' AS recipient, x.msg -> 'content' AS content
                  FROM jsonb_array_elements(messages) WITH ORDINALITY AS x(msg, ord)
                OFFSET 0) e
          LEFT JOIN tidings.channels c ON c.name = e.msg ->> 'channel'
    ), valid AS (
        -- `opts`: the message sets one of the optional keys below; without any (bulk enqueue, mostly), their
        -- defaults are used without looking each one up.
        SELECT i.ord, i.msg, i.recipient, i.content, i.policy,
               coalesce(i.msg ->> 'use_case', 'transactional') AS use_case,
               i.msg ?| '{scheduled_for,validity,priority,ignore_quiet_hours,cap_frequency,tags,reference,callback_url,fallback,traceparent,tracestate}'::text[] AS opts,
               CASE WHEN i.msg ? 'scheduled_for' THEN (i.msg ->> 'scheduled_for')::timestamptz END AS scheduled_for
          FROM input i
         WHERE i.problem IS NULL OR tidings.raise_invalid(i.problem, CASE WHEN NOT single THEN i.ord END)
    ), planned AS (
        SELECT v.ord, (CASE WHEN v.ord <= 4096 THEN head ELSE lpad(to_hex(ms + (v.ord - 1) / 4096), 12, '0') || '7' END
                || lpad(to_hex((v.ord - 1) % 4096), 3, '0')
                || encode(set_byte(substr(rnd, (v.ord::integer - 1) * 8 + 1, 8), 0,
                                   (get_byte(rnd, (v.ord::integer - 1) * 8) & 63) | 128), 'hex'))::uuid AS id, v.msg ->> 'channel' AS channel,
               v.recipient, v.content, v.use_case,
               CASE WHEN v.scheduled_for > t + tidings.send_now_window() THEN 'scheduled' ELSE 'accepted' END::tidings.message_status AS status,
               CASE WHEN v.opts THEN coalesce((v.msg ->> 'priority')::smallint, 0) ELSE 0 END AS priority,
               v.scheduled_for,
               CASE WHEN v.scheduled_for > t + tidings.send_now_window() THEN v.scheduled_for ELSE t END AS run_at,
               greatest(t, v.scheduled_for) + make_interval(secs => coalesce(
                   CASE WHEN v.opts THEN (v.msg ->> 'validity')::integer END,
                   (v.policy -> 'validity' ->> v.use_case)::integer,
                   CASE WHEN v.use_case = '2fa' THEN 600 ELSE 129600 END)) AS expires_at,
               v.opts AND coalesce((v.msg ->> 'ignore_quiet_hours')::boolean, false) AS ignore_quiet_hours,
               v.opts AND coalesce((v.msg ->> 'cap_frequency')::boolean, false) AS cap_frequency,
               CASE WHEN v.opts AND jsonb_typeof(v.msg -> 'tags') = 'array'
                    THEN ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(v.msg -> 'tags') x)
                    ELSE '{}' END AS tags,
               CASE WHEN v.opts THEN v.msg ->> 'reference' END AS reference,
               CASE WHEN v.opts THEN v.msg ->> 'callback_url' END AS callback_url,
               CASE WHEN v.opts THEN nullif(v.msg -> 'fallback', 'null') END AS fallback,
               CASE WHEN v.opts THEN v.msg ->> 'traceparent' END AS traceparent,
               CASE WHEN v.opts THEN v.msg ->> 'tracestate' END AS tracestate,
               coalesce((v.policy ->> 'max_attempts')::integer, 10) AS max_attempts
          FROM valid v
    ), plain AS (
        -- Without a reference there is nothing to conflict with: a plain insert (no speculative insertion).
        INSERT INTO tidings.messages AS m (id, channel, recipient, content, use_case, status, priority, scheduled_for,
                                           run_at, expires_at, ignore_quiet_hours, cap_frequency, tags, reference,
                                           max_attempts, created_at, updated_at, callback_url, fallback, chain_id,
                                           traceparent, tracestate)
        SELECT id, channel, recipient, content, use_case, status, priority, scheduled_for, run_at, expires_at,
               ignore_quiet_hours, cap_frequency, tags, reference, max_attempts, t, t, callback_url, fallback,
               CASE WHEN fallback IS NOT NULL THEN id END, traceparent, tracestate
          FROM planned
         WHERE reference IS NULL
         ORDER BY ord
        RETURNING m.id, m.status, m.channel, m.reference
    ), referenced AS (
        INSERT INTO tidings.messages AS m (id, channel, recipient, content, use_case, status, priority, scheduled_for,
                                           run_at, expires_at, ignore_quiet_hours, cap_frequency, tags, reference,
                                           max_attempts, created_at, updated_at, callback_url, fallback, chain_id,
                                           traceparent, tracestate)
        SELECT id, channel, recipient, content, use_case, status, priority, scheduled_for, run_at, expires_at,
               ignore_quiet_hours, cap_frequency, tags, reference, max_attempts, t, t, callback_url, fallback,
               CASE WHEN fallback IS NOT NULL THEN id END, traceparent, tracestate
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

    -- One wake-up per transaction (PostgreSQL folds identical notifications of one transaction into one), and
    -- only from one enqueueing transaction at a time. A notifying transaction holds the database's notify lock
    -- from its pre-commit until its commit is flushed, so concurrent notifying commits queue behind each other,
    -- one WAL flush each: single-message enqueues from 16 connections ran at 156/s on a disk that flushes in 3 ms,
    -- while plain inserts group-commit at 3,900/s. A transaction that finds another one notifying (the advisory
    -- lock, held to its end) commits without a notification: its messages are claimed on that transaction's
    -- wake-up if they are committed by then, else on the next enqueue's, else on the workers' poll.
    IF any_due AND pg_try_advisory_xact_lock(7596220364041245001) THEN
        PERFORM pg_notify('tidings', '');
    END IF;
    RETURN QUERY SELECT unnest(ids);
END $$;

-- Enqueue one message, with the four new named parameters (defaults NULL). A new signature, so the old one goes and
-- the producer role's grant is given again.
DROP FUNCTION tidings.enqueue(text, jsonb, jsonb, timestamptz, integer, text, boolean, boolean, integer, text[], text);
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
    reference          text        DEFAULT NULL,
    callback_url       text        DEFAULT NULL,
    fallback           jsonb       DEFAULT NULL,
    traceparent        text        DEFAULT NULL,
    tracestate         text        DEFAULT NULL
) RETURNS uuid
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT tidings.enqueue_many(jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
        'channel', channel, 'recipient', recipient, 'content', content,
        'scheduled_for', to_jsonb(scheduled_for), 'validity', validity, 'use_case', use_case,
        'ignore_quiet_hours', ignore_quiet_hours, 'cap_frequency', cap_frequency, 'priority', priority,
        'tags', to_jsonb(tags), 'reference', reference, 'callback_url', callback_url, 'fallback', fallback,
        'traceparent', traceparent, 'tracestate', tracestate))))
$$;
REVOKE ALL ON FUNCTION tidings.enqueue(text, jsonb, jsonb, timestamptz, integer, text, boolean, boolean, integer,
                                       text[], text, text, jsonb, text, text) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_producer') THEN
        GRANT EXECUTE ON FUNCTION tidings.enqueue(text, jsonb, jsonb, timestamptz, integer, text, boolean, boolean,
                                                  integer, text[], text, text, jsonb, text, text)
              TO tidings_producer;
    END IF;
END $$;
