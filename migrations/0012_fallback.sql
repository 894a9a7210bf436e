-- Fallback across channels (issue 17): a message's `fallback` (stored by 0010) becomes a chain of messages.
--
-- Each step is its own message (own id, events, idempotency key, policy), linked to the first by chain_id (the
-- first message's id, set by 0010's enqueue_many) and numbered by chain_step (1, 2, 3; NULL on the first). A step
-- is created by a trigger on tidings.messages, in the transaction of the status change that calls for it,
-- whichever path made the change (the completer, a receipt, the sweeper, cancel, an operator action).
--
-- Why a row trigger on messages and not a statement trigger on message_events: the trigger's WHEN clause
-- (`NEW.chain_id IS NOT NULL`) is evaluated by the executor for each updated row without calling any function,
-- so a message outside a chain costs one null test per status change and nothing else: no transition table is
-- materialised, no join runs per completer batch. The function runs only for the messages of chains.
--
-- Semantics (docs/state_machine.md):
--   rejected, sending_failed, expired  the next step (if its `on` names the outcome) is created `accepted`, due now;
--   sent                               a next step with "undelivered" in its `on` is created `scheduled` at
--                                      sent + after (never after the chain's expires_at), waiting for a receipt;
--   delivered                          cancels that waiting step if it has not been claimed yet;
--   delivery_failed                    releases it at once (if not claimed yet).
-- No step is created once the chain's validity (the first message's expires_at) has passed. tidings.cancel on the
-- first message cancels every waiting message of the chain and stops it from growing (fallback := NULL on the
-- first message, checked under the first message's row lock, which the trigger takes too).

ALTER TABLE tidings.messages
    ADD COLUMN chain_step    smallint,
    ADD COLUMN chain_trigger text;

COMMENT ON COLUMN tidings.messages.chain_step IS 'The step number of a fallback step (1 to 3); NULL on the first message of a chain.';
COMMENT ON COLUMN tidings.messages.chain_trigger IS 'What created this fallback step: rejected, sending_failed, expired or undelivered.';

-- A chain's messages, and the guard that no step is ever created twice. Partial: a message outside a chain never
-- has an entry, so its status changes insert nothing here.
CREATE UNIQUE INDEX messages_chain ON tidings.messages (chain_id, chain_step) WHERE chain_id IS NOT NULL;

-- Steps created and sent, for the metrics (tidings_fallback_steps_total): appended by the trigger, taken (DELETE
-- ... RETURNING) and counted by the workers' queue sampler, so it stays as small as the steps of a few seconds.
CREATE TABLE tidings.fallback_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    event        text NOT NULL CHECK (event IN ('created', 'sent')),
    trigger      text NOT NULL,
    from_channel text NOT NULL,
    to_channel   text NOT NULL
);

-- The rules of a fallback chain, after the first message's own. Returns 'fallback[N].<field>: <rule>' or NULL.
-- N counts from 0, as in the JSON array. A step's recipient defaults to the first message's, so the step's shape
-- is checked against the recipient it will be sent to.
CREATE OR REPLACE FUNCTION tidings.check_fallback(msg jsonb, kind text, now timestamptz) RETURNS text
LANGUAGE plpgsql STABLE AS $$
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
END $$;

-- The chain a message belongs to, in step order: [{id, channel, status, step, trigger}], or NULL outside a chain.
CREATE FUNCTION tidings.chain_of(chain uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_agg(jsonb_build_object('id', c.id, 'channel', c.channel, 'status', c.status,
                                        'step', coalesce(c.chain_step, 0), 'trigger', c.chain_trigger)
                     ORDER BY coalesce(c.chain_step, 0))
      FROM tidings.messages c
     WHERE c.chain_id = chain
$$;

-- Moves a chain on after a status change of one of its messages (see the top of this file). Runs as the owner:
-- whichever role changed the status (a worker, a producer canceling) needs no grant on what it writes.
CREATE FUNCTION tidings.fallback_advance() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
END $$;

CREATE TRIGGER messages_fallback AFTER UPDATE OF status ON tidings.messages
    FOR EACH ROW WHEN (NEW.chain_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION tidings.fallback_advance();

-- Cancel, as in 0002, and for the first message of a chain: every waiting message of the chain, and no step
-- after this (a message of the chain being sent right now finishes, but grows no step). Returns true when a
-- message was canceled.
CREATE OR REPLACE FUNCTION tidings.cancel(message_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
END $$;

-- A message's state, with its chain: chain_id and [{id, channel, status, step, trigger}] (NULL outside a chain).
-- A new result type, so the function is dropped and created again, and the producer's grant given again.
DROP FUNCTION tidings.status(uuid);
CREATE FUNCTION tidings.status(message_id uuid)
RETURNS TABLE (id uuid, channel text, status tidings.message_status, attempts integer, run_at timestamptz,
               expires_at timestamptz, provider_message_id text, last_error text, created_at timestamptz,
               updated_at timestamptz, chain_id uuid, chain jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.id, m.channel, m.status, m.attempts, m.run_at, m.expires_at, m.provider_message_id, m.last_error,
           m.created_at, m.updated_at, m.chain_id,
           CASE WHEN m.chain_id IS NOT NULL THEN tidings.chain_of(m.chain_id) END
      FROM tidings.messages m WHERE m.id = message_id
$$;

-- A message's event history, oldest first; for a message of a chain, the history of the whole chain, each row
-- naming its message and channel.
DROP FUNCTION tidings.events(uuid);
CREATE FUNCTION tidings.events(message_id uuid)
RETURNS TABLE (at timestamptz, status tidings.message_status, reason text, attempt integer, started_at timestamptz,
               detail jsonb, message uuid, channel text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH ids AS (
        SELECT events.message_id AS id
        UNION
        SELECT c.id
          FROM tidings.messages m
          JOIN tidings.messages c ON c.chain_id = m.chain_id
         WHERE m.id = events.message_id AND m.chain_id IS NOT NULL
    )
    SELECT e.at, e.status, e.reason, e.attempt, e.started_at, e.detail, e.message_id, m.channel
      FROM ids
      JOIN tidings.message_events e ON e.message_id = ids.id
      LEFT JOIN tidings.messages m ON m.id = e.message_id
     ORDER BY e.id
$$;

REVOKE ALL ON FUNCTION tidings.chain_of(uuid), tidings.fallback_advance(), tidings.status(uuid),
                       tidings.events(uuid) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_producer') THEN
        GRANT EXECUTE ON FUNCTION tidings.status(uuid), tidings.events(uuid) TO tidings_producer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_worker') THEN
        -- The queue sampler takes the log's rows to count them.
        GRANT SELECT, DELETE ON tidings.fallback_log TO tidings_worker;
    END IF;
END $$;
