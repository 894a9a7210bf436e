-- Status callbacks (issue 14, item 6): the outbox the worker delivers from.
--
-- A message asks for callbacks with its own callback_url (0010) or through its channel's (`[channels.NAME]
-- callback_url`, synced into tidings.channels.policy as the key "callback_url"; the message's own URL wins).
-- Every transition of such a message to a status a producer hears about becomes one outbox row, in the same
-- transaction as the transition, whichever path wrote it (completer, receipts, sweeper, rescuer, tidings.cancel,
-- operator actions): all of them insert an event row, so one statement-level trigger on tidings.message_events
-- (over its transition table, as 0009 does for recipients) is the single place.
--
-- Cost when nobody asks: the trigger first asks two cheap questions ("does any channel have a callback URL?"
-- over the few channel rows, "does any message?" from a partial index) and returns without looking at the new
-- events. `tidings bench` measured it (README, "Status callbacks").

CREATE TABLE tidings.callback_outbox (
    -- The webhook-id of every POST of this callback: stable across retries, so a receiver can deduplicate.
    id                  uuid PRIMARY KEY,
    message_id          uuid NOT NULL,
    -- The transition's event: callbacks of one message go out in this order.
    event_id            bigint NOT NULL,
    url                 text NOT NULL,
    -- The payload, as of the transition (snapshot: a later change of the message does not rewrite history).
    channel             text NOT NULL,
    status              tidings.message_status NOT NULL,
    reason              text NOT NULL,
    message_attempt     integer,
    at                  timestamptz NOT NULL,
    provider_message_id text,
    reference           text,
    tags                text[] NOT NULL DEFAULT '{}',
    -- Delivery: due at run_at. A claim moves run_at to the end of its lease and sets lease_id, so the rows of a
    -- worker killed mid-delivery come back by themselves when the lease ends.
    run_at              timestamptz NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    lease_id            uuid,
    -- The last failure: `http_<status>`, `timeout`, `connect` or `transport` (never a header or the secret).
    last_error          text,
    delivered_at        timestamptz,
    given_up_at         timestamptz
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- The claim: only pending rows, by due time.
CREATE INDEX callback_outbox_due ON tidings.callback_outbox (run_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
-- In order per message (the claim's "no earlier pending row" check), a message's callbacks, the pruner.
CREATE INDEX callback_outbox_message ON tidings.callback_outbox (message_id, event_id);

-- "Does any message ask for callbacks?" answered from an index holding only those messages. A partial index
-- gets an entry only from the row versions matching it, so messages without a callback_url pay nothing for it.
CREATE INDEX messages_callback ON tidings.messages (id) WHERE callback_url IS NOT NULL;

-- SECURITY DEFINER: whichever role writes the transition (the worker, a producer's tidings.cancel, the API)
-- writes its callback without a grant on the outbox; the function does nothing but that.
-- enable_seqscan off: "does any message have a callback_url?" must be answered from messages_callback even when
-- the statistics are stale (right after a bulk enqueue the planner assumes most rows have one, and would walk the
-- whole table looking for the first). jit off: the cost penalty of the tiny channels table's scan would otherwise
-- make every call JIT-compile.
CREATE FUNCTION tidings.callback_outbox_add() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
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
END $$;
REVOKE ALL ON FUNCTION tidings.callback_outbox_add() FROM PUBLIC;

CREATE TRIGGER message_events_callbacks AFTER INSERT ON tidings.message_events
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION tidings.callback_outbox_add();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_worker') THEN
        -- Claim, complete, release (UPDATE; FOR UPDATE needs it too), read, prune (DELETE).
        GRANT SELECT, UPDATE, DELETE ON tidings.callback_outbox TO tidings_worker;
        -- [callbacks] allowed_hosts is synced at worker start, like the channels.
        GRANT SELECT, INSERT, DELETE ON tidings.callback_hosts TO tidings_worker;
    END IF;
END $$;
