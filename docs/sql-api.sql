-- Today's SQL API of tidings: every function in schema `tidings` as the migrations leave it.
-- Generated from a freshly migrated database (pg_get_functiondef, PostgreSQL 15); do not edit.
-- Regenerate: TIDINGS_BLESS=1 cargo test --test it sql_api::docs_sql_api_sql_is_todays_sql_api
-- docs/sql-api.md explains the functions producers call.

CREATE TYPE tidings.message_status AS ENUM ('accepted', 'scheduled', 'processing', 'sent', 'delivered', 'delivery_failed', 'sending_failed', 'rejected', 'expired', 'canceled');

-- tidings.callback_host_allowed(text): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.callback_host_allowed(host text)
 RETURNS boolean
 LANGUAGE sql
 STABLE
AS $function$
    SELECT EXISTS (
        SELECT 1 FROM tidings.callback_hosts h
         WHERE h.pattern = host
            OR h.pattern = split_part(host, ':', 1)
            OR (h.pattern LIKE '*.%' AND split_part(host, ':', 1) LIKE '%' || substr(h.pattern, 2)))
$function$
;

-- tidings.callback_outbox_add(): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.callback_outbox_add()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET enable_seqscan TO 'off'
 SET jit TO 'off'
AS $function$
BEGIN
    IF EXISTS (SELECT 1 FROM tidings.channels c WHERE c.policy ->> 'callback_url' IS NOT NULL) THEN
        -- Some channel asks for every message: each new event's message and channel are looked at.
        INSERT INTO tidings.callback_outbox (id, message_id, event_id, url, channel, status, reason, message_attempt,
                                             at, provider_message_id, reference, tags, run_at)
        SELECT tidings.uuid_v7(e.at), e.message_id, e.id, coalesce(m.callback_url, c.policy ->> 'callback_url'),
               m.channel, e.status, e.reason, e.attempt, e.at, m.provider_message_id, m.reference, m.tags, e.at
          FROM added e
          JOIN tidings.messages m ON m.id = e.message_id
          LEFT JOIN tidings.channels c ON c.name = m.channel
         WHERE e.status IN ('sent', 'delivered', 'delivery_failed', 'sending_failed', 'rejected', 'expired', 'canceled')
           AND coalesce(m.callback_url, c.policy ->> 'callback_url') IS NOT NULL
         ORDER BY e.id;
    ELSIF EXISTS (SELECT 1 FROM tidings.messages m WHERE m.callback_url IS NOT NULL) THEN
        -- Only messages ask: each new event is looked up in messages_callback, which holds only those (an event
        -- of any other message costs a probe of that small index, not a visit to the message).
        INSERT INTO tidings.callback_outbox (id, message_id, event_id, url, channel, status, reason, message_attempt,
                                             at, provider_message_id, reference, tags, run_at)
        SELECT tidings.uuid_v7(e.at), e.message_id, e.id, m.callback_url,
               m.channel, e.status, e.reason, e.attempt, e.at, m.provider_message_id, m.reference, m.tags, e.at
          FROM added e
          JOIN tidings.messages m ON m.id = e.message_id AND m.callback_url IS NOT NULL
         WHERE e.status IN ('sent', 'delivered', 'delivery_failed', 'sending_failed', 'rejected', 'expired', 'canceled')
         ORDER BY e.id;
    END IF;
    -- Otherwise nothing asks for callbacks (the usual case): two cheap questions, not one look at the new events.
    RETURN NULL;
END $function$
;

-- tidings.cancel(uuid): EXECUTE by tidings_producer
CREATE OR REPLACE FUNCTION tidings.cancel(message_id uuid)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    is_head boolean;
    n bigint;
BEGIN
    -- Locked first, as the trigger does before it adds a step: a step added before this lock is seen by the
    -- UPDATE below (a new statement, so a new snapshot); one after it finds the chain without fallback.
    SELECT m.chain_id = m.id INTO is_head FROM tidings.messages m WHERE m.id = cancel.message_id FOR UPDATE;
    WITH c AS (
        UPDATE tidings.messages m SET status = 'canceled', updated_at = now(), run_at = now()
         WHERE m.status IN ('accepted', 'scheduled')
           AND (m.id = cancel.message_id OR (is_head AND m.chain_id = cancel.message_id))
        RETURNING m.id, m.attempts
    ), ev AS (
        INSERT INTO tidings.message_events (message_id, status, reason, attempt, detail)
        SELECT c.id, 'canceled', 'canceled_by_producer', c.attempts,
               CASE WHEN c.id <> cancel.message_id THEN jsonb_build_object('chain_id', cancel.message_id) END
          FROM c
    )
    SELECT count(*) INTO n FROM c;
    IF is_head THEN
        UPDATE tidings.messages m SET fallback = NULL WHERE m.id = cancel.message_id;
    END IF;
    RETURN n > 0;
END $function$
;

-- tidings.chain_of(uuid): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.chain_of(chain uuid)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
AS $function$
    SELECT jsonb_agg(jsonb_build_object('id', c.id, 'channel', c.channel, 'status', c.status,
                                        'step', coalesce(c.chain_step, 0), 'trigger', c.chain_trigger)
                     ORDER BY coalesce(c.chain_step, 0))
      FROM tidings.messages_all c
     WHERE c.chain_id = chain
$function$
;

-- tidings.check_bird_content(jsonb): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_bird_content(content jsonb)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE
        WHEN (content -> 'body' IS NULL) = (content -> 'template' IS NULL)
            THEN 'content: must have exactly one of body or template'
        WHEN content - '{body,template}'::text[] <> '{}'::jsonb
            THEN 'content: only body or template are allowed'
        WHEN content -> 'template' IS NOT NULL THEN tidings.check_bird_template(content -> 'template')
        WHEN jsonb_typeof(content -> 'body') <> 'object' THEN 'content.body: must be an object'
        WHEN content #>> '{body,type}' = 'text' THEN CASE
            WHEN NOT tidings.is_text(content #> '{body,text,text}')
                THEN 'content.body.text.text: must be a string of 1 to 10000 characters'
            ELSE tidings.check_bird_part(content -> 'body', 'text', '{text,attachments,actions,metadata}')
            END
        WHEN content #>> '{body,type}' IN ('image', 'file') THEN coalesce(
            tidings.check_bird_media(content #>> '{body,type}', content -> 'body' -> (content #>> '{body,type}')),
            tidings.check_bird_part(content -> 'body', content #>> '{body,type}',
                                    CASE WHEN content #>> '{body,type}' = 'image' THEN '{images,text,metadata}'
                                         ELSE '{files,text,metadata}' END::text[]))
        ELSE 'content.body.type: must be one of text, image, file'
    END
$function$
;

-- tidings.check_bird_media(text,jsonb): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_bird_media(t text, part jsonb)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
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
        WHEN t = 'file' AND jsonb_path_exists(part -> 'files',
                 '$[*] ? (!(@.contentType like_regex "^(application|audio|font|haptics|image|message|model|multipart|text|video)/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$" flag "i"))')
            THEN 'content.body.file.files: every contentType must be a MIME type such as video/mp4'
        WHEN part ? 'text' AND NOT tidings.is_text(part -> 'text')
            THEN format('content.body.%s.text: must be a string of 1 to 10000 characters', t)
    END
$function$
;

-- tidings.check_bird_part(jsonb,text,text[]): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_bird_part(body jsonb, t text, fields text[])
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE
        WHEN body - ARRAY['type', t] <> '{}'::jsonb
            THEN format('content.body.%s: not allowed in a %s body (only type and %s)',
                        tidings.unknown_field(body, ARRAY['type', t]), t, t)
        WHEN (body -> t) - fields <> '{}'::jsonb
            THEN format('content.body.%s.%s: unknown field', t, tidings.unknown_field(body -> t, fields))
        WHEN (body -> t) ? 'metadata' AND jsonb_typeof(body -> t -> 'metadata') <> 'object'
            THEN format('content.body.%s.metadata: must be an object', t)
    END
$function$
;

-- tidings.check_bird_template(jsonb): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_bird_template(template jsonb)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE
        WHEN jsonb_typeof(template) <> 'object' THEN 'content.template: must be an object'
        WHEN NOT tidings.is_uuid_text(template -> 'projectId')
            THEN 'content.template.projectId: must be a UUID string'
        WHEN NOT tidings.is_text(template -> 'version', 100)
            THEN 'content.template.version: must be a non-empty string'
        WHEN template ? 'locale' AND NOT tidings.is_text(template -> 'locale', 35)
            THEN 'content.template.locale: must be a non-empty string'
        WHEN template ? 'parameters' AND jsonb_typeof(template -> 'parameters') <> 'array'
            THEN 'content.template.parameters: must be an array'
        WHEN NOT template ? 'locale' THEN 'content.template.locale: required'
        WHEN template - '{projectId,version,locale,parameters,shortLinks}'::text[] <> '{}'::jsonb
            THEN 'content.template.'
                 || tidings.unknown_field(template, '{projectId,version,locale,parameters,shortLinks}') || ': unknown field'
        WHEN template ? 'shortLinks' AND jsonb_typeof(template -> 'shortLinks') NOT IN ('object', 'null')
            THEN 'content.template.shortLinks: must be an object'
        WHEN template ? 'parameters' AND jsonb_path_exists(template -> 'parameters',
                 '$[*] ? (@.type() != "object" || !exists(@."key") || @."key".type() != "string" || @."key" == ""
                                 || !exists(@."type") || @."type".type() != "string" || @."type" == "")')
            THEN 'content.template.parameters: every item needs a type and a key (non-empty strings)'
        WHEN template ? 'parameters' AND jsonb_path_exists(template -> 'parameters',
                 '$[*] ? (@."type" == "string" && (!exists(@."value") || @."value".type() != "string"))')
            THEN 'content.template.parameters: a parameter of type string needs a string value'
    END
$function$
;

-- tidings.check_common(jsonb,timestamp with time zone): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_common(msg jsonb, now timestamp with time zone)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
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
$function$
;

-- tidings.check_extras(jsonb,text,timestamp with time zone): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_extras(msg jsonb, kind text, now timestamp with time zone)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
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
$function$
;

-- tidings.check_fallback(jsonb,text,timestamp with time zone): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_fallback(msg jsonb, kind text, now timestamp with time zone)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    chain jsonb := msg -> 'fallback';
    step jsonb;
    i integer := 0;
    prev_channel text := msg ->> 'channel';
    prev_receipts boolean;
    step_kind text;
    step_policy jsonb;
    seen text[] := ARRAY[msg ->> 'channel'];
    recipient jsonb;
    problem text;
    p text;
BEGIN
    IF chain IS NULL OR chain = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(chain) <> 'array' OR jsonb_array_length(chain) = 0 THEN
        RETURN 'fallback: must be an array of 1 to 3 steps';
    END IF;
    IF jsonb_array_length(chain) > 3 THEN
        RETURN 'fallback[3]: at most 3 steps per chain';
    END IF;
    SELECT coalesce((c.policy ->> 'receipts')::boolean, false) INTO prev_receipts
      FROM tidings.channels c WHERE c.name = prev_channel;
    FOR step IN SELECT value FROM jsonb_array_elements(chain) LOOP
        p := format('fallback[%s]', i);
        IF jsonb_typeof(step) <> 'object' THEN
            RETURN p || ': must be a JSON object with channel, content and on';
        END IF;
        IF step - '{channel,recipient,content,on,after}'::text[] <> '{}'::jsonb THEN
            RETURN p || '.' || tidings.unknown_field(step, '{channel,recipient,content,on,after}') || ': unknown field';
        END IF;
        IF NOT tidings.is_text(step -> 'channel', 63) THEN
            RETURN p || '.channel: must be a channel name';
        END IF;
        SELECT c.kind, c.policy INTO step_kind, step_policy FROM tidings.channels c WHERE c.name = step ->> 'channel';
        IF step_kind IS NULL THEN
            RETURN format('%s.channel: unknown channel %L', p, left(step ->> 'channel', 63));
        END IF;
        IF (step ->> 'channel') = ANY (seen) THEN
            RETURN format('%s.channel: %L is already in the chain (each channel at most once)', p, step ->> 'channel');
        END IF;
        seen := seen || (step ->> 'channel');
        IF jsonb_typeof(step -> 'on') IS DISTINCT FROM 'array' OR jsonb_array_length(step -> 'on') = 0
           OR jsonb_path_exists(step -> 'on',
                  '$[*] ? (@.type() != "string"
                          || (@ != "rejected" && @ != "sending_failed" && @ != "expired" && @ != "undelivered"))')
        THEN
            RETURN p || '.on: must be a non-empty array of rejected, sending_failed, expired, undelivered';
        END IF;
        IF step ? 'after' AND NOT (step -> 'on') ? 'undelivered' THEN
            RETURN p || '.after: only allowed with "undelivered" in on';
        END IF;
        IF (step -> 'on') ? 'undelivered' THEN
            IF NOT step ? 'after' THEN
                RETURN p || '.after: required with "undelivered" in on (seconds to wait for a delivered receipt after sent)';
            END IF;
            IF jsonb_typeof(step -> 'after') <> 'number' OR (step ->> 'after') !~ '^[0-9]+$'
               OR (step ->> 'after')::numeric < 1 OR (step ->> 'after')::numeric > 2592000 THEN
                RETURN p || '.after: must be a whole number of seconds from 1 to 2592000';
            END IF;
            IF NOT prev_receipts THEN
                RETURN format('%s.on: "undelivered" needs delivery receipts from channel %L (receipt_secret_env)',
                              p, prev_channel);
            END IF;
        END IF;
        IF step ? 'recipient' AND jsonb_typeof(step -> 'recipient') <> 'object' THEN
            RETURN p || '.recipient: must be a JSON object';
        END IF;
        IF jsonb_typeof(step -> 'content') IS DISTINCT FROM 'object' THEN
            RETURN p || '.content: must be a JSON object';
        END IF;
        IF pg_column_size(step -> 'content') > 65536 THEN
            RETURN p || '.content: must be at most 64 KiB';
        END IF;
        IF pg_column_size(step -> 'recipient') > 4096 THEN
            RETURN p || '.recipient: must be at most 4 KiB';
        END IF;
        recipient := coalesce(step -> 'recipient', msg -> 'recipient');
        problem := coalesce(
            tidings.check_representable('recipient', step -> 'recipient'),
            tidings.check_representable('content', step -> 'content'),
            CASE WHEN recipient ? 'timezone' AND NOT tidings.is_timezone(recipient ->> 'timezone')
                 THEN 'recipient.timezone: must be an IANA time zone name' END,
            tidings.check_shape(step_kind, recipient, step -> 'content'));
        IF problem IS NOT NULL THEN
            RETURN p || '.' || problem;
        END IF;
        prev_channel := step ->> 'channel';
        prev_receipts := coalesce((step_policy ->> 'receipts')::boolean, false);
        i := i + 1;
    END LOOP;
    RETURN NULL;
END $function$
;

-- tidings.check_message(jsonb,text,timestamp with time zone): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_message(msg jsonb, kind text, now timestamp with time zone)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT tidings.check_parts(msg, msg -> 'recipient', msg -> 'content', kind, now)
$function$
;

-- tidings.check_parts(jsonb,jsonb,jsonb,text,timestamp with time zone): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_parts(msg jsonb, recipient jsonb, content jsonb, kind text, now timestamp with time zone)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
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
$function$
;

-- tidings.check_representable(text,jsonb): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_representable(part text, v jsonb)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE
        WHEN jsonb_path_exists(v, 'strict $.**{33}') THEN part || ': nested deeper than 32 levels'
        WHEN jsonb_path_exists(v, 'strict $.** ? (@.abs() > 1e308)')
            THEN part || ': numbers must be between -1e308 and 1e308'
    END
$function$
;

-- tidings.check_shape(text,jsonb,jsonb): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.check_shape(kind text, recipient jsonb, content jsonb)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE
        WHEN kind IN ('sandbox', 'bird_sms') THEN CASE
            WHEN NOT tidings.is_e164_text(recipient ->> 'phone')
                THEN 'recipient.phone: must be an E.164 phone number such as +31612345678'
            ELSE tidings.check_bird_content(content)
            END
        WHEN kind = 'instaply_whatsapp' THEN CASE
            WHEN NOT (tidings.is_text(recipient -> 'customerThreadId', 64)
                      OR (jsonb_typeof(recipient -> 'customerThreadId') = 'number'
                          AND (recipient ->> 'customerThreadId') ~ '^[0-9]{1,19}$'))
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
            WHEN content - '{text,contentSid,updateThreadStatus}'::text[] <> '{}'::jsonb
                THEN 'content.' || tidings.unknown_field(content, '{text,contentSid,updateThreadStatus}')
                     || ': unknown field'
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
            WHEN content - '{content,multiLangContent,onlyLastEngaged}'::text[] <> '{}'::jsonb
                THEN 'content.' || tidings.unknown_field(content, '{content,multiLangContent,onlyLastEngaged}')
                     || ': unknown field'
            WHEN coalesce(content -> 'content', content -> 'multiLangContent') = '{}'::jsonb
                THEN format('content.%s: must not be empty',
                            CASE WHEN content ? 'content' THEN 'content' ELSE 'multiLangContent' END)
            WHEN content -> 'content' ? 'templateId' AND NOT (
                     tidings.is_text(content #> '{content,templateId}', 128)
                     OR (jsonb_typeof(content #> '{content,templateId}') = 'number'
                         AND (content #>> '{content,templateId}') ~ '^[0-9]{1,19}$'))
                THEN 'content.content.templateId: must be a template id (a non-empty string or a whole number)'
            WHEN content -> 'content' ? 'templateId' AND (content -> 'content') - 'templateId' <> '{}'::jsonb
                THEN format('content.content.%s: not allowed with templateId (a template is sent by its id alone)',
                            tidings.unknown_field(content -> 'content', '{templateId}'))
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
            WHEN content - '{message,instantAppSchemaApiId,instantAppParameters}'::text[] <> '{}'::jsonb
                THEN 'content.' || tidings.unknown_field(content, '{message,instantAppSchemaApiId,instantAppParameters}')
                     || ': unknown field'
            WHEN content ? 'instantAppParameters' AND jsonb_path_exists(content -> 'instantAppParameters',
                     'strict $.* ? (@.type() != "string" && @.type() != "number" && @.type() != "boolean")')
                THEN 'content.instantAppParameters: every value must be a string, number or boolean'
            END
        WHEN kind = 'webhook' THEN NULL -- any JSON object: the receiving gateway owns its schema
        ELSE format('channel: kind %L is not supported', kind)
    END
$function$
;

-- tidings.enqueue(text,jsonb,jsonb,timestamp with time zone,integer,text,boolean,boolean,integer,text[],text,text,jsonb,text,text): EXECUTE by tidings_producer
CREATE OR REPLACE FUNCTION tidings.enqueue(channel text, recipient jsonb, content jsonb, scheduled_for timestamp with time zone DEFAULT NULL::timestamp with time zone, validity integer DEFAULT NULL::integer, use_case text DEFAULT 'transactional'::text, ignore_quiet_hours boolean DEFAULT false, cap_frequency boolean DEFAULT false, priority integer DEFAULT 0, tags text[] DEFAULT '{}'::text[], reference text DEFAULT NULL::text, callback_url text DEFAULT NULL::text, fallback jsonb DEFAULT NULL::jsonb, traceparent text DEFAULT NULL::text, tracestate text DEFAULT NULL::text)
 RETURNS uuid
 LANGUAGE sql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT tidings.enqueue_many(jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
        'channel', channel, 'recipient', recipient, 'content', content,
        'scheduled_for', to_jsonb(scheduled_for), 'validity', validity, 'use_case', use_case,
        'ignore_quiet_hours', ignore_quiet_hours, 'cap_frequency', cap_frequency, 'priority', priority,
        'tags', to_jsonb(tags), 'reference', reference, 'callback_url', callback_url, 'fallback', fallback,
        'traceparent', traceparent, 'tracestate', tracestate))))
$function$
;

-- tidings.enqueue_many(jsonb): EXECUTE by tidings_producer
CREATE OR REPLACE FUNCTION tidings.enqueue_many(messages jsonb)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
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
END $function$
;

-- tidings.events(uuid): EXECUTE by tidings_producer
CREATE OR REPLACE FUNCTION tidings.events(message_id uuid)
 RETURNS TABLE(at timestamp with time zone, status tidings.message_status, reason text, attempt integer, started_at timestamp with time zone, detail jsonb, message uuid, channel text)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    ids uuid[];
BEGIN
    SELECT array_agg(c.id) INTO ids
      FROM tidings.messages_all m
      JOIN tidings.messages_all c ON c.chain_id = m.chain_id
     WHERE m.id = events.message_id AND m.chain_id IS NOT NULL;
    ids := coalesce(ids, ARRAY[events.message_id]);
    RETURN QUERY
    SELECT e.at, e.status, e.reason, e.attempt, e.started_at, e.detail, e.message_id,
           (SELECT m.channel FROM tidings.messages_all m WHERE m.id = e.message_id)
      FROM unnest(ids) AS i(id)
     CROSS JOIN LATERAL (SELECT * FROM tidings.message_events_all x WHERE x.message_id = i.id) e
     ORDER BY e.id;
END $function$
;

-- tidings.fallback_advance(): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.fallback_advance()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    t timestamptz := now();
    next_no smallint := coalesce(NEW.chain_step, 0) + 1;
    nxt jsonb := NEW.fallback -> 0;
    why text;
    head tidings.messages;
    prev_channel text;
    prev_kind text;
    step_id uuid;
    step_status tidings.message_status;
    step_run_at timestamptz;
    capped boolean;
BEGIN
    -- A step handed to its provider: counted.
    IF NEW.status = 'sent' AND NEW.chain_step IS NOT NULL THEN
        SELECT p.channel INTO prev_channel
          FROM tidings.messages p
         WHERE p.chain_id = NEW.chain_id AND coalesce(p.chain_step, 0) = NEW.chain_step - 1;
        INSERT INTO tidings.fallback_log (event, trigger, from_channel, to_channel)
        VALUES ('sent', NEW.chain_trigger, coalesce(prev_channel, ''), NEW.channel);
    END IF;
    IF nxt IS NULL THEN
        RETURN NULL; -- the last step, or a canceled chain
    END IF;

    -- The receipt that the next step waits for: delivered makes it unnecessary, delivery_failed makes it due now.
    -- Only while it waits: once claimed it goes its way, and this receipt stays on this message alone.
    IF NEW.status = 'delivered' THEN
        WITH c AS (
            UPDATE tidings.messages m SET status = 'canceled', run_at = t, updated_at = t
             WHERE m.chain_id = NEW.chain_id AND m.chain_step = next_no AND m.status IN ('accepted', 'scheduled')
            RETURNING m.id, m.attempts
        )
        INSERT INTO tidings.message_events (message_id, at, status, reason, attempt, detail)
        SELECT c.id, t, 'canceled', 'fallback_not_needed', c.attempts, jsonb_build_object('delivered', NEW.id)
          FROM c;
        RETURN NULL;
    END IF;
    IF NEW.status = 'delivery_failed' THEN
        WITH r AS (
            UPDATE tidings.messages m SET status = 'accepted', run_at = t, updated_at = t
             WHERE m.chain_id = NEW.chain_id AND m.chain_step = next_no AND m.status = 'scheduled'
               AND m.attempts = 0 AND m.run_at > t
            RETURNING m.id, m.attempts
        )
        INSERT INTO tidings.message_events (message_id, at, status, reason, attempt, detail)
        SELECT r.id, t, 'accepted', 'fallback_delivery_failed', r.attempts, jsonb_build_object('previous', NEW.id)
          FROM r;
        IF FOUND THEN
            PERFORM pg_notify('tidings', '');
        END IF;
        RETURN NULL;
    END IF;

    why := CASE WHEN NEW.status = 'sent' THEN 'undelivered'
                WHEN NEW.status IN ('rejected', 'sending_failed', 'expired') THEN NEW.status::text END;
    IF why IS NULL OR NOT (nxt -> 'on') ? why THEN
        RETURN NULL;
    END IF;
    -- One validity for the chain: nothing is created after it.
    IF NEW.expires_at <= t THEN
        RETURN NULL;
    END IF;
    -- The first message's row lock orders this against tidings.cancel; a canceled chain has no fallback left.
    SELECT * INTO head FROM tidings.messages h WHERE h.id = NEW.chain_id FOR UPDATE;
    IF head.fallback IS NULL THEN
        RETURN NULL;
    END IF;

    -- A capped chain counts once: a step is capped only while no message of the chain was admitted.
    SELECT c.kind INTO prev_kind FROM tidings.channels c WHERE c.name = NEW.channel;
    capped := NEW.cap_frequency AND NOT EXISTS (
        SELECT 1 FROM tidings.frequency_log f
         WHERE f.channel_kind = prev_kind AND f.recipient = tidings.recipient_key(NEW.recipient)
           AND f.message_id = NEW.id);

    IF why = 'undelivered' THEN
        step_status := 'scheduled';
        step_run_at := least(t + make_interval(secs => (nxt ->> 'after')::integer), NEW.expires_at);
    ELSE
        step_status := 'accepted';
        step_run_at := t;
    END IF;
    step_id := tidings.uuid_v7();
    INSERT INTO tidings.messages AS m (id, channel, recipient, content, use_case, status, priority, run_at, expires_at,
                                       ignore_quiet_hours, cap_frequency, tags, max_attempts, created_at, updated_at,
                                       callback_url, fallback, chain_id, chain_step, chain_trigger, traceparent,
                                       tracestate)
    SELECT step_id, c.name, coalesce(nxt -> 'recipient', head.recipient), nxt -> 'content', NEW.use_case, step_status,
           NEW.priority, step_run_at, NEW.expires_at, NEW.ignore_quiet_hours, capped, NEW.tags,
           coalesce((c.policy ->> 'max_attempts')::integer, 10), t, t, NEW.callback_url,
           nullif(NEW.fallback - 0, '[]'::jsonb), NEW.chain_id, next_no, why, NEW.traceparent, NEW.tracestate
      FROM tidings.channels c
     WHERE c.name = nxt ->> 'channel'
    ON CONFLICT (chain_id, chain_step) WHERE chain_id IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL; -- created before (or its channel is gone from the config)
    END IF;
    INSERT INTO tidings.message_events (message_id, at, status, reason, detail)
    VALUES (step_id, t, step_status,
            CASE WHEN why = 'undelivered' THEN 'fallback_awaiting_receipt' ELSE 'fallback_' || why END,
            jsonb_build_object('chain_id', NEW.chain_id, 'step', next_no, 'previous', NEW.id,
                               'previous_channel', NEW.channel)
            || CASE WHEN why = 'undelivered'
                    THEN jsonb_build_object('receipt_wait_until', step_run_at) ELSE '{}'::jsonb END);
    INSERT INTO tidings.fallback_log (event, trigger, from_channel, to_channel)
    VALUES ('created', why, NEW.channel, nxt ->> 'channel');
    IF step_status = 'accepted' THEN
        PERFORM pg_notify('tidings', '');
    END IF;
    RETURN NULL;
END $function$
;

-- tidings.frequency_admit(text,text,uuid,integer,interval): EXECUTE by tidings_worker
CREATE OR REPLACE FUNCTION tidings.frequency_admit(kind text, recipient text, message_id uuid, max_count integer, per interval)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('tidings.frequency:' || kind || ':' || recipient, 0));
    IF EXISTS (SELECT 1 FROM tidings.frequency_log f
                WHERE f.channel_kind = kind AND f.recipient = frequency_admit.recipient
                  AND f.message_id = frequency_admit.message_id) THEN
        RETURN true;
    END IF;
    IF (SELECT count(*) FROM tidings.frequency_log f
         WHERE f.channel_kind = kind AND f.recipient = frequency_admit.recipient AND f.at > now() - per) >= max_count THEN
        RETURN false;
    END IF;
    INSERT INTO tidings.frequency_log (channel_kind, recipient, message_id)
    VALUES (kind, frequency_admit.recipient, frequency_admit.message_id);
    RETURN true;
END $function$
;

-- tidings.history_partition_name(text,date): EXECUTE by PUBLIC
CREATE OR REPLACE FUNCTION tidings.history_partition_name(parent text, d date)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$ SELECT parent || '_p' || to_char(d, 'YYYYMMDD') $function$
;

-- tidings.history_partitions(interval,integer,date): EXECUTE by PUBLIC, tidings_worker
CREATE OR REPLACE FUNCTION tidings.history_partitions(retention interval, ahead integer DEFAULT 3, since date DEFAULT NULL::date)
 RETURNS TABLE(action text, day date)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    first_day date;
    d date;
    t text;
    keep_from date := ((now() - retention) AT TIME ZONE 'UTC')::date;
BEGIN
    PERFORM set_config('lock_timeout', '2s', true);
    -- The oldest hot message (primary key: its first entry) decides how far back partitions must exist.
    SELECT least((to_timestamp(('x' || substr(replace(m.id::text, '-', ''), 1, 12))::bit(48)::bigint / 1000.0)
                  AT TIME ZONE 'UTC')::date, today)
      INTO first_day
      FROM tidings.messages m ORDER BY m.id LIMIT 1;
    first_day := least(coalesce(first_day, today), today, coalesce(since, today));
    d := first_day;
    WHILE d <= today + ahead LOOP
        FOREACH t IN ARRAY ARRAY['message_history', 'message_event_history'] LOOP
            IF to_regclass('tidings.' || tidings.history_partition_name(t, d)) IS NULL THEN
                EXECUTE format('CREATE TABLE tidings.%I PARTITION OF tidings.%I FOR VALUES FROM (%L) TO (%L)',
                               tidings.history_partition_name(t, d), t,
                               tidings.uuid_floor(d::timestamp AT TIME ZONE 'UTC'),
                               tidings.uuid_floor((d + 1)::timestamp AT TIME ZONE 'UTC'));
                IF t = 'message_history' THEN
                    action := 'created'; day := d; RETURN NEXT;
                END IF;
            END IF;
        END LOOP;
        d := d + 1;
    END LOOP;
    -- Retention: whole days, oldest first, each only while no hot message was created on it or before.
    FOR d IN
        SELECT to_date(substr(c.relname, length('message_history_p') + 1), 'YYYYMMDD') AS pd
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'tidings.message_history'::regclass
         ORDER BY 1
    LOOP
        EXIT WHEN d >= keep_from;
        EXIT WHEN EXISTS (SELECT 1 FROM tidings.messages m
                           WHERE m.id < tidings.uuid_floor((d + 1)::timestamp AT TIME ZONE 'UTC'));
        EXECUTE format('DROP TABLE IF EXISTS tidings.%I, tidings.%I',
                       tidings.history_partition_name('message_history', d),
                       tidings.history_partition_name('message_event_history', d));
        action := 'dropped'; day := d; RETURN NEXT;
    END LOOP;
END $function$
;

-- tidings.history_restore(uuid[]): EXECUTE by PUBLIC, tidings_worker
CREATE OR REPLACE FUNCTION tidings.history_restore(ids uuid[])
 RETURNS SETOF uuid
 LANGUAGE sql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    WITH back AS (
        DELETE FROM tidings.message_history h
         WHERE h.id = ANY (ids)
           AND NOT EXISTS (SELECT 1 FROM tidings.messages m WHERE m.channel = h.channel AND m.reference = h.reference)
        RETURNING h.*
    )
    INSERT INTO tidings.messages SELECT * FROM back RETURNING id
$function$
;

-- tidings.is_e164(jsonb): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.is_e164(v jsonb)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT coalesce(jsonb_typeof(v) = 'string'
       AND (v #>> '{}') ~ '^\+[1-9][0-9]*$'
       AND length(v #>> '{}') BETWEEN 8 AND 16, false)
$function$
;

-- tidings.is_e164_text(text): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.is_e164_text(phone text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT coalesce(phone ~ '^\+[1-9][0-9]*$' AND int4range(8, 16, '[]') @> length(phone), false)
$function$
;

-- tidings.is_text(jsonb,integer): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.is_text(v jsonb, max_len integer DEFAULT 10000)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT coalesce(jsonb_typeof(v) = 'string' AND int4range(1, max_len, '[]') @> length(v #>> '{}'), false)
$function$
;

-- tidings.is_timezone(text): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.is_timezone(tz text)
 RETURNS boolean
 LANGUAGE sql
 STABLE
AS $function$
    SELECT EXISTS (SELECT 1 FROM tidings.time_zones z WHERE z.name = tz)
$function$
;

-- tidings.is_traceparent(text): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.is_traceparent(v text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT v ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[^ ]*)?$'
       AND left(v, 2) <> 'ff'
       AND (left(v, 2) <> '00' OR length(v) = 55)
       AND substr(v, 4, 32) <> repeat('0', 32)
       AND substr(v, 37, 16) <> repeat('0', 16)
$function$
;

-- tidings.is_uuid_text(jsonb): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.is_uuid_text(v jsonb)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT coalesce(jsonb_typeof(v) = 'string'
       AND (v #>> '{}') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false)
$function$
;

-- tidings.live_estimate(): EXECUTE by tidings_worker
CREATE OR REPLACE FUNCTION tidings.live_estimate()
 RETURNS TABLE(channel text, status text, n bigint)
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT i.values[1], i.values[2], round(i.frequency * greatest(c.reltuples, 0))::bigint
      FROM pg_statistic_ext s
      JOIN pg_statistic_ext_data d ON d.stxoid = s.oid
      JOIN pg_class c ON c.oid = s.stxrelid
     CROSS JOIN LATERAL pg_mcv_list_items(d.stxdmcv) i
     WHERE s.stxname = 'messages_channel_status'
       AND s.stxnamespace = 'tidings'::regnamespace
       AND i.values[2] IN ('accepted', 'scheduled', 'processing')
$function$
;

-- tidings.max_schedule_ahead(): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.max_schedule_ahead()
 RETURNS interval
 LANGUAGE sql
 IMMUTABLE
AS $function$ SELECT interval '35 days' $function$
;

-- tidings.message_recipients_add(): EXECUTE by PUBLIC
CREATE OR REPLACE FUNCTION tidings.message_recipients_add()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    INSERT INTO tidings.message_recipients (phone, message_id)
    SELECT left(n.recipient ->> 'phone', 64), n.id
      FROM added n
     WHERE n.recipient ? 'phone' AND jsonb_typeof(n.recipient -> 'phone') = 'string';
    RETURN NULL;
END $function$
;

-- tidings.message_recipients_remove(): EXECUTE by PUBLIC
CREATE OR REPLACE FUNCTION tidings.message_recipients_remove()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    DELETE FROM tidings.message_recipients r
     USING removed o
     WHERE o.recipient ? 'phone'
       AND r.phone = left(o.recipient ->> 'phone', 64)
       AND r.message_id = o.id;
    RETURN NULL;
END $function$
;

-- tidings.raise_invalid(text,bigint): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.raise_invalid(problem text, pos bigint)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
DECLARE
    field text := split_part(problem, ': ', 1);
    rule text := substr(problem, length(field) + 3);
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = '22023',
        MESSAGE = CASE WHEN pos IS NULL THEN problem ELSE format('messages[%s].%s', pos - 1, problem) END,
        COLUMN = field,
        DETAIL = rule;
END $function$
;

-- tidings.rate_return(text,integer,double precision): EXECUTE by tidings_worker
CREATE OR REPLACE FUNCTION tidings.rate_return(ch text, unused integer, burst double precision)
 RETURNS void
 LANGUAGE sql
AS $function$
    UPDATE tidings.channel_state SET tokens = least(burst, tokens + unused) WHERE channel = ch
$function$
;

-- tidings.rate_take(text,integer,double precision,double precision): EXECUTE by tidings_worker
CREATE OR REPLACE FUNCTION tidings.rate_take(ch text, want integer, rate double precision, burst double precision)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    avail double precision;
    granted integer;
BEGIN
    INSERT INTO tidings.channel_state (channel, tokens, refilled_at) VALUES (ch, burst, clock_timestamp())
    ON CONFLICT (channel) DO NOTHING;
    SELECT least(burst, s.tokens + rate * extract(epoch FROM clock_timestamp() - s.refilled_at))
      INTO avail
      FROM tidings.channel_state s WHERE s.channel = ch
       FOR UPDATE;
    granted := greatest(0, least(floor(avail)::integer, want));
    UPDATE tidings.channel_state SET tokens = avail - granted, refilled_at = clock_timestamp() WHERE channel = ch;
    RETURN granted;
END $function$
;

-- tidings.recipient_key(jsonb): EXECUTE by tidings_worker
CREATE OR REPLACE FUNCTION tidings.recipient_key(recipient jsonb)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT coalesce(
        CASE WHEN (recipient ->> 'phone') ~ '^[2-9][0-9]{9}$' THEN '+1' || (recipient ->> 'phone')
             ELSE recipient ->> 'phone' END,
        'thread:' || (recipient ->> 'customerThreadId'),
        recipient::text)
$function$
;

-- tidings.send_now_window(): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.send_now_window()
 RETURNS interval
 LANGUAGE sql
 IMMUTABLE
AS $function$ SELECT interval '10 minutes' $function$
;

-- tidings.status(uuid): EXECUTE by tidings_producer
CREATE OR REPLACE FUNCTION tidings.status(message_id uuid)
 RETURNS TABLE(id uuid, channel text, status tidings.message_status, attempts integer, run_at timestamp with time zone, expires_at timestamp with time zone, provider_message_id text, last_error text, created_at timestamp with time zone, updated_at timestamp with time zone, chain_id uuid, chain jsonb)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    RETURN QUERY
    SELECT m.id, m.channel, m.status, m.attempts, m.run_at, m.expires_at, m.provider_message_id, m.last_error,
           m.created_at, m.updated_at, m.chain_id,
           CASE WHEN m.chain_id IS NOT NULL THEN tidings.chain_of(m.chain_id) END
      FROM tidings.messages_all m WHERE m.id = status.message_id;
END $function$
;

-- tidings.suppress(text,text,text): EXECUTE by tidings_producer
CREATE OR REPLACE FUNCTION tidings.suppress(channel_kind text, recipient text, reason text DEFAULT NULL::text)
 RETURNS void
 LANGUAGE sql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    INSERT INTO tidings.suppressions AS s (channel_kind, recipient, reason)
    VALUES (channel_kind, tidings.recipient_key(jsonb_build_object('phone', recipient)), reason)
    ON CONFLICT (channel_kind, recipient) DO UPDATE SET reason = excluded.reason
$function$
;

-- tidings.try_timestamptz(text): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.try_timestamptz(s text)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    RETURN s::timestamptz;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $function$
;

-- tidings.unknown_field(jsonb,text[]): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.unknown_field(obj jsonb, allowed text[])
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT left(k, 64) FROM jsonb_object_keys(obj) k WHERE k <> ALL (allowed) LIMIT 1
$function$
;

-- tidings.unsuppress(text,text): EXECUTE by tidings_producer
CREATE OR REPLACE FUNCTION tidings.unsuppress(channel_kind text, recipient text)
 RETURNS boolean
 LANGUAGE sql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    WITH gone AS (
        DELETE FROM tidings.suppressions s
         WHERE s.channel_kind = unsuppress.channel_kind
           AND s.recipient = tidings.recipient_key(jsonb_build_object('phone', unsuppress.recipient))
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM gone)
$function$
;

-- tidings.url_host(text): EXECUTE by the owner only
CREATE OR REPLACE FUNCTION tidings.url_host(url text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT lower(substring(url FROM '^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9.-]+(?::[0-9]{1,5})?)(?:[/?#][^ ]*)?$'))
$function$
;

-- tidings.uuid_floor(timestamp with time zone): EXECUTE by PUBLIC, tidings_worker
CREATE OR REPLACE FUNCTION tidings.uuid_floor(at timestamp with time zone)
 RETURNS uuid
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0') || '70008000000000000000')::uuid
$function$
;

-- tidings.uuid_v7(timestamp with time zone): EXECUTE by tidings_worker
CREATE OR REPLACE FUNCTION tidings.uuid_v7(at timestamp with time zone DEFAULT clock_timestamp())
 RETURNS uuid
 LANGUAGE sql
 PARALLEL SAFE
AS $function$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$function$
;
