-- The delivery rules that need state shared by every worker: opt-outs, frequency caps and the per-channel rate
-- limit (the token bucket lives in tidings.channel_state).

-- The key a recipient is known by across channels of one kind: the phone number in E.164 (10-digit US numbers
-- normalised to +1…), else the WhatsApp thread, else the whole recipient object.
CREATE FUNCTION tidings.recipient_key(recipient jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        CASE WHEN (recipient ->> 'phone') ~ '^[2-9][0-9]{9}$' THEN '+1' || (recipient ->> 'phone')
             ELSE recipient ->> 'phone' END,
        'thread:' || (recipient ->> 'customerThreadId'),
        recipient::text)
$$;

-- Opt-outs: a suppressed recipient's message is rejected (opted_out) at dispatch, not at enqueue, so a STOP that
-- arrives after scheduling still wins.
CREATE FUNCTION tidings.suppress(channel_kind text, recipient text, reason text DEFAULT NULL) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO tidings.suppressions AS s (channel_kind, recipient, reason)
    VALUES (channel_kind, tidings.recipient_key(jsonb_build_object('phone', recipient)), reason)
    ON CONFLICT (channel_kind, recipient) DO UPDATE SET reason = excluded.reason
$$;

CREATE FUNCTION tidings.unsuppress(channel_kind text, recipient text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM tidings.suppressions s
         WHERE s.channel_kind = unsuppress.channel_kind
           AND s.recipient = tidings.recipient_key(jsonb_build_object('phone', unsuppress.recipient))
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- Frequency caps: one row per capped message admitted for a recipient, per channel kind.
CREATE TABLE tidings.frequency_log (
    channel_kind text NOT NULL,
    recipient    text NOT NULL,
    message_id   uuid NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_kind, recipient, message_id)
);
CREATE INDEX frequency_log_at ON tidings.frequency_log (at);

-- Admits message_id for recipient when fewer than max_count capped messages were admitted within `per`.
-- Concurrent workers serialise on a per-recipient advisory lock held to the end of the transaction, so two
-- workers can never both take the last place. A retry of an admitted message is admitted again (same row).
-- A capped message counts from its first attempt, even if that attempt fails: the cap is never exceeded.
CREATE FUNCTION tidings.frequency_admit(kind text, recipient text, message_id uuid, max_count integer, per interval)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
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
END $$;

REVOKE ALL ON FUNCTION tidings.recipient_key(jsonb), tidings.suppress(text, text, text), tidings.unsuppress(text, text),
                       tidings.frequency_admit(text, text, uuid, integer, interval) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_producer') THEN
        GRANT EXECUTE ON FUNCTION tidings.suppress(text, text, text), tidings.unsuppress(text, text) TO tidings_producer;
    END IF;
END $$;

-- Per-channel rate limit shared by every worker on every host: a token bucket in tidings.channel_state.
-- Takes up to `want` tokens (rate per second, at most `burst` saved up) and returns how many were granted.
-- The row lock serialises workers. Tokens are taken at claim time, before the sends.
CREATE FUNCTION tidings.rate_take(ch text, want integer, rate double precision, burst double precision)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
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
END $$;

-- Gives back tokens taken but not used (fewer messages were due than tokens granted).
CREATE FUNCTION tidings.rate_return(ch text, unused integer, burst double precision) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE tidings.channel_state SET tokens = least(burst, tokens + unused) WHERE channel = ch
$$;
REVOKE ALL ON FUNCTION tidings.rate_take(text, integer, double precision, double precision),
                       tidings.rate_return(text, integer, double precision) FROM PUBLIC;

-- The worker role (0003) uses all of this at dispatch.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tidings_worker') THEN
        GRANT SELECT, INSERT, DELETE ON tidings.frequency_log TO tidings_worker;
        GRANT EXECUTE ON FUNCTION tidings.recipient_key(jsonb),
                                  tidings.frequency_admit(text, text, uuid, integer, interval),
                                  tidings.rate_take(text, integer, double precision, double precision),
                                  tidings.rate_return(text, integer, double precision)
              TO tidings_worker;
    END IF;
END $$;
